package provision

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kilnbuild/kiln/dispatcher/internal/addons"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/workspace"
	"github.com/kilnbuild/kiln/schema"
)

// lockSpace is the first key of the advisory locks on projects.
const lockSpace = 0x6b696c6e // "kiln"

// errLocked: another replica works the project now.
var errLocked = errors.New("project is being worked by another replica")

// withProjectLock runs fn holding the project's advisory lock on a
// connection of its own, so a dispatcher that dies releases it with its
// connection; another replica's job for the project snoozes meanwhile.
func withProjectLock(ctx context.Context, pool *pgxpool.Pool, id string, fn func() error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring a connection for project %s: %w", id, err)
	}
	defer conn.Release()
	key := fnvKey(id)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, int32(lockSpace), key).Scan(&ok); err != nil {
		return fmt.Errorf("locking project %s: %w", id, err)
	}
	if !ok {
		return errLocked
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, int32(lockSpace), key); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) // the lock goes with the connection
		}
	}()
	return fn()
}

// fnvKey is a project's key in lockSpace.
func fnvKey(id string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int32(h.Sum32())
}

// errPermanent marks a step error no retry mends (a clone refused).
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// run is one job run's view of a project.
type run struct {
	s       *Service
	row     *store.ProjectRow
	spec    workspace.Spec
	env     map[string]string // secret_env, from the credentials Secret
	started time.Time
}

// do runs step name; done false means "not yet, come back" (the workspace
// pod is still starting).
func (r *run) do(ctx context.Context, name string) (bool, error) {
	c := r.s.o.Cluster
	switch name {
	case StepNamespace:
		return true, c.EnsureNamespace(ctx, r.spec)
	case StepServiceAccount:
		return true, c.EnsureServiceAccount(ctx, r.spec)
	case StepSecret:
		return true, c.EnsureSecrets(ctx, r.spec, r.env)
	case StepRunnerAccess:
		return true, c.EnsureRunnerAccess(ctx, r.spec)
	case StepWorkspace:
		if err := c.EnsureStatefulSet(ctx, r.spec); err != nil {
			return false, err
		}
		wait := max(min(r.s.o.Slice-time.Since(r.started), 10*time.Second), time.Second)
		ready, err := c.CheckWorkspace(ctx, r.spec, wait)
		var ce *workspace.CloneError
		if errors.As(err, &ce) {
			return false, permanentError{err}
		}
		return ready, err
	}
	if typ, ok := strings.CutPrefix(name, addonStepPrefix); ok {
		a := r.s.addons[typ]
		if a == nil {
			return false, permanentError{fmt.Errorf("add-on %s is not configured on this dispatcher", typ)}
		}
		creds, err := a.Provision(ctx, addonProject(r.row))
		if err != nil {
			return false, err
		}
		if err := c.SetEnv(ctx, r.spec, creds.Env); err != nil {
			return false, err
		}
		return true, r.recordAddon(ctx, typ, creds.Names())
	}
	return false, permanentError{fmt.Errorf("unknown step %q", name)}
}

// undo removes what step name made; gone false means "not yet".
func (r *run) undo(ctx context.Context, name string) (bool, error) {
	c := r.s.o.Cluster
	switch name {
	case StepNamespace:
		return c.DeleteNamespace(ctx, r.spec)
	case StepServiceAccount:
		return c.DeleteServiceAccount(ctx, r.spec)
	case StepSecret:
		return c.DeleteSecrets(ctx, r.spec)
	case StepRunnerAccess:
		return c.DeleteRunnerAccess(ctx, r.spec)
	case StepWorkspace:
		return c.DeleteStatefulSet(ctx, r.spec)
	}
	if typ, ok := strings.CutPrefix(name, addonStepPrefix); ok {
		a := r.s.addons[typ]
		if a == nil {
			return false, fmt.Errorf("add-on %s is not configured on this dispatcher: its %s cannot be removed", typ, name)
		}
		return true, a.Deprovision(ctx, addonProject(r.row))
	}
	return true, nil
}

func (r *run) recordAddon(ctx context.Context, typ string, env []string) error {
	as := r.row.Addons
	for i := range as {
		if as[i].Type == typ {
			as[i].Env = env
		}
	}
	return store.SetProjectAddons(ctx, r.s.o.Pool, r.row.ID, as)
}

// provisionWorker runs ProvisionArgs jobs.
type provisionWorker struct {
	river.WorkerDefaults[ProvisionArgs]
	s *Service
}

// Timeout implements river.Worker: a run yields after Slice; this bounds a
// step that hangs.
func (w *provisionWorker) Timeout(*river.Job[ProvisionArgs]) time.Duration {
	return w.s.o.Slice + 10*time.Second
}

// Work implements river.Worker.
func (w *provisionWorker) Work(ctx context.Context, job *river.Job[ProvisionArgs]) error {
	return w.s.exclusive(ctx, job.Args.ProjectID, w.s.provision)
}

// retireWorker runs RetireArgs jobs.
type retireWorker struct {
	river.WorkerDefaults[RetireArgs]
	s *Service
}

// Timeout implements river.Worker.
func (w *retireWorker) Timeout(*river.Job[RetireArgs]) time.Duration {
	return w.s.o.Slice + 10*time.Second
}

// Work implements river.Worker.
func (w *retireWorker) Work(ctx context.Context, job *river.Job[RetireArgs]) error {
	return w.s.exclusive(ctx, job.Args.ProjectID, w.s.retire)
}

// exclusive runs work on project id holding its lock; while another
// replica holds it, the job snoozes.
func (s *Service) exclusive(ctx context.Context, id string, work func(context.Context, string) error) error {
	err := withProjectLock(ctx, s.o.Pool, id, func() error { return work(ctx, id) })
	if errors.Is(err, errLocked) {
		return river.JobSnooze(time.Second)
	}
	return err
}

// load is a run of row, with its credentials and secret_env read from its
// Secret when withSecret.
func (s *Service) load(ctx context.Context, row *store.ProjectRow, withSecret bool) (*run, error) {
	r := &run{s: s, row: row, started: time.Now()}
	if row.Managed == nil {
		return r, nil
	}
	var creds *schema.Credentials
	if withSecret {
		var err error
		if creds, r.env, err = s.readSecret(ctx, row.ID); err != nil {
			return nil, err
		}
	}
	r.spec = s.spec(row, creds)
	return r, nil
}

// provision works a provisioning project's steps from where they are, or
// its rollback once a step has failed.
func (s *Service) provision(ctx context.Context, id string) error {
	row, err := store.GetProjectRow(ctx, s.o.Pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if row.Status != schema.ProjectProvisioning || row.Managed == nil {
		return nil // ready, failed, or being deleted (the retire job removes it)
	}
	rollingBack := row.Provisioning.FailedStep != ""
	r, err := s.load(ctx, row, !rollingBack)
	if err != nil {
		if rollingBack {
			return err
		}
		return s.failStep(ctx, row, StepSecret, err) // the credentials Secret is gone: nothing can be made
	}
	if rollingBack {
		return s.rollback(ctx, r)
	}
	for _, st := range r.row.Provisioning.Steps {
		if st.Status == schema.StepDone {
			continue
		}
		if time.Since(r.started) > s.o.Slice {
			return river.JobSnooze(0)
		}
		if cur, err := store.ProjectStatusOf(ctx, s.o.Pool, id); err != nil || cur != schema.ProjectProvisioning {
			return err // deleted meanwhile: the retire job takes over
		}
		// A try counts when the step starts, after a failed try, and when a
		// run died inside it (a step other than the workspace's is never
		// left running otherwise: a step that kills its dispatcher every
		// time still reaches StepAttempts). The workspace step stays
		// running while it waits for the pod, bounded by WorkspaceTimeout.
		fresh := st.Status == schema.StepPending || st.Error != "" ||
			(st.Status == schema.StepRunning && st.Name != StepWorkspace)
		if fresh {
			st.Attempts++
		}
		if err := store.UpdateStep(ctx, s.o.Pool, id, st.Name, store.StepUpdate{Status: schema.StepRunning, Attempt: fresh}); err != nil {
			return err
		}
		t0 := time.Now()
		done, err := s.try(ctx, r, st.Name)
		switch {
		case err != nil:
			s.report(st.Name, time.Since(t0), true)
			var perm permanentError
			if errors.As(err, &perm) || st.Attempts >= s.o.StepAttempts {
				return s.failStep(ctx, r.row, st.Name, err)
			}
			msg := err.Error()
			if uerr := store.UpdateStep(ctx, s.o.Pool, id, st.Name, store.StepUpdate{Status: schema.StepRunning, Error: &msg}); uerr != nil {
				return uerr
			}
			s.logger.WarnContext(ctx, "provisioning step failed; retrying", "project_id", id, "step", st.Name,
				"attempt", st.Attempts, "error", msg)
			return river.JobSnooze(s.o.StepBackoff(st.Attempts))
		case !done:
			if st.StartedAt != nil && time.Since(*st.StartedAt) > s.o.WorkspaceTimeout {
				return s.failStep(ctx, r.row, st.Name, fmt.Errorf("the workspace pod %s/%s was not ready within %s",
					r.spec.Namespace, workspace.PodName(r.spec), s.o.WorkspaceTimeout))
			}
			return river.JobSnooze(time.Second)
		}
		s.report(st.Name, time.Since(t0), false)
		empty := ""
		if err := store.UpdateStep(ctx, s.o.Pool, id, st.Name, store.StepUpdate{Status: schema.StepDone, Error: &empty, Finish: true}); err != nil {
			return err
		}
	}
	if err := store.SetProjectStatus(ctx, s.o.Pool, id, []schema.ProjectStatus{schema.ProjectProvisioning}, string(schema.ProjectReady), "", ""); err != nil {
		return err
	}
	took := time.Since(r.row.Provisioning.StartedAt)
	if s.o.OnDone != nil {
		s.o.OnDone(took, true)
	}
	s.logger.InfoContext(ctx, "project ready", "project_id", id, "project", r.row.Name, "namespace", r.row.Namespace,
		"took_ms", took.Milliseconds())
	return nil
}

// try runs one step, after the test hook.
func (s *Service) try(ctx context.Context, r *run, name string) (bool, error) {
	if h := s.o.testHookBeforeStep; h != nil {
		if err := h(ctx, name); err != nil {
			return false, err
		}
	}
	return r.do(ctx, name)
}

func (s *Service) report(step string, took time.Duration, failed bool) {
	if s.o.OnStep != nil {
		s.o.OnStep(step, took, failed)
	}
}

// failStep records the failed step and starts the rollback.
func (s *Service) failStep(ctx context.Context, row *store.ProjectRow, step string, cause error) error {
	msg := cause.Error()
	if err := store.UpdateStep(ctx, s.o.Pool, row.ID, step, store.StepUpdate{Status: schema.StepFailed, Error: &msg, Finish: true}); err != nil {
		return err
	}
	if err := store.RecordProvisionFailure(ctx, s.o.Pool, row.ID, step, msg); err != nil {
		return err
	}
	s.logger.WarnContext(ctx, "provisioning failed; rolling back", "project_id", row.ID, "project", row.Name,
		"step", step, "error", msg)
	return river.JobSnooze(0) // the next run rolls back
}

// undoAll undoes, in reverse, every step that ran and is not undone yet.
// A failed step keeps its status (and error); the others end rolled_back.
func (s *Service) undoAll(ctx context.Context, r *run) error {
	steps := r.row.Provisioning.Steps
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		if st.Attempts == 0 || st.Status == schema.StepRolledBack {
			continue
		}
		if time.Since(r.started) > s.o.Slice {
			return river.JobSnooze(0)
		}
		if st.Status != schema.StepFailed && st.Status != schema.StepRollingBack {
			if err := store.UpdateStep(ctx, s.o.Pool, r.row.ID, st.Name, store.StepUpdate{Status: schema.StepRollingBack}); err != nil {
				return err
			}
		}
		t0 := time.Now()
		gone, err := r.undo(ctx, st.Name)
		if err != nil {
			s.report("rollback", time.Since(t0), true)
			s.logger.WarnContext(ctx, "undoing a provisioning step failed; retrying", "project_id", r.row.ID, "step", st.Name, "error", err)
			return river.JobSnooze(s.o.StepBackoff(3))
		}
		if !gone {
			return river.JobSnooze(time.Second)
		}
		if st.Status != schema.StepFailed {
			if err := store.UpdateStep(ctx, s.o.Pool, r.row.ID, st.Name, store.StepUpdate{Status: schema.StepRolledBack, Finish: true}); err != nil {
				return err
			}
		}
		steps[i].Status = schema.StepRolledBack
	}
	return s.DeleteSecret(ctx, r.row.ID)
}

func (s *Service) rollback(ctx context.Context, r *run) error {
	if err := s.undoAll(ctx, r); err != nil {
		return err
	}
	p := r.row.Provisioning
	err := store.SetProjectStatus(ctx, s.o.Pool, r.row.ID, []schema.ProjectStatus{schema.ProjectProvisioning},
		string(schema.ProjectFailed), p.FailedStep, p.Error)
	if err != nil {
		return err
	}
	if s.o.OnDone != nil {
		s.o.OnDone(time.Since(p.StartedAt), false)
	}
	s.logger.InfoContext(ctx, "project failed; rolled back", "project_id", r.row.ID, "project", r.row.Name, "step", p.FailedStep)
	return nil
}

// retire cancels a deleting project's builds, removes its workspace (a
// managed project's) and marks it deleted.
func (s *Service) retire(ctx context.Context, id string) error {
	row, err := store.GetProjectRow(ctx, s.o.Pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if row.Status != schema.ProjectDeleting {
		return nil
	}
	r, err := s.load(ctx, row, false)
	if err != nil {
		return err
	}
	// Again here: a build accepted just before DELETE took effect.
	if err := s.o.Lifecycle.CancelProject(ctx, id, "project "+r.row.Name+" is being deleted"); err != nil {
		return err
	}
	if r.row.Managed != nil {
		if err := s.undoAll(ctx, r); err != nil {
			return err
		}
	}
	if err := store.SetProjectStatus(ctx, s.o.Pool, id, []schema.ProjectStatus{schema.ProjectDeleting}, store.StatusDeleted, "", ""); err != nil {
		return err
	}
	s.logger.InfoContext(ctx, "project deleted", "project_id", id, "project", r.row.Name)
	return nil
}

func addonProject(r *store.ProjectRow) addons.Project { return addons.Project{ID: r.ID, Name: r.Name} }
