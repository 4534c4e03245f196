package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/schema"
)

// StatusDeleted is the stored status of a retired project: the API answers
// 404 for it; its row stays for its builds' audit rows.
const StatusDeleted = "deleted"

// Managed is what is stored of a managed project's spec: no secret (the
// credentials and secret_env values are only in Kubernetes Secrets).
type Managed struct {
	Repository schema.Repository `json:"repository"`
	Workspace  schema.Workspace  `json:"workspace"`
	Addons     []string          `json:"addons,omitempty"` // types, in provisioning order
	// BuildsNamespace is where the project's credentials Secret is
	// (jobtemplates.ProjectSecretName), fixed at creation.
	BuildsNamespace string `json:"builds_namespace"`
}

const projectColumns = `id, name, status, namespace, pod_name, pod_selector, container, workdir, git_remote,
	git_branch, commit_author_name, commit_author_email, max_concurrent, created_at, managed, addons,
	failed_step, provision_error, provision_started_at, ready_at`

// ProjectRow is a project as stored: the API's view plus what only the
// dispatcher reads.
type ProjectRow struct {
	schema.Project
	Managed *Managed
}

func scanProject(row interface{ Scan(...any) error }) (*schema.Project, error) {
	r, err := scanProjectRow(row)
	if err != nil {
		return nil, err
	}
	return &r.Project, nil
}

func scanProjectRow(row interface{ Scan(...any) error }) (*ProjectRow, error) {
	var r ProjectRow
	p := &r.Project
	var managed, addons []byte
	var status, failedStep, provErr string
	var started, ready *time.Time
	err := row.Scan(&p.ID, &p.Name, &status, &p.Namespace, &p.PodName, &p.PodSelector, &p.Container, &p.Workdir,
		&p.GitRemote, &p.GitBranch, &p.AuthorName, &p.AuthorEmail, &p.MaxConcurrent, &p.CreatedAt, &managed, &addons,
		&failedStep, &provErr, &started, &ready)
	if err != nil {
		return nil, err
	}
	p.Status = schema.ProjectStatus(status)
	if managed != nil {
		r.Managed = &Managed{}
		if err := json.Unmarshal(managed, r.Managed); err != nil {
			return nil, fmt.Errorf("project %s: reading managed spec: %w", p.ID, err)
		}
		p.Managed = true
		repo, ws := r.Managed.Repository, r.Managed.Workspace
		p.Repository, p.Workspace = &repo, &ws
		if err := json.Unmarshal(addons, &p.Addons); err != nil {
			return nil, fmt.Errorf("project %s: reading add-ons: %w", p.ID, err)
		}
		p.Provisioning = &schema.Provisioning{Steps: []schema.ProvisioningStep{}, FailedStep: failedStep,
			Error: provErr, ReadyAt: ready}
		if started != nil {
			p.Provisioning.StartedAt = *started
		}
	}
	return &r, nil
}

// CreateProject inserts a bring-your-own-pod project p (ID, CallbackSecret
// and the target already filled in), ready at once, and sets its CreatedAt.
// A name taken by a live project returns ErrConflict.
func CreateProject(ctx context.Context, db DB, p *schema.Project) error {
	return CreateManagedProject(ctx, db, p, nil, nil)
}

// CreateManagedProject is CreateProject of a managed project (m non-nil): it
// starts provisioning with the steps named.
func CreateManagedProject(ctx context.Context, db DB, p *schema.Project, m *Managed, steps []string) error {
	p.Status = schema.ProjectReady
	var managed, addons []byte = nil, []byte("[]")
	if m != nil {
		p.Status = schema.ProjectProvisioning
		var err error
		if managed, err = json.Marshal(m); err != nil {
			return err
		}
		as := make([]schema.Addon, len(m.Addons))
		for i, t := range m.Addons {
			as[i] = schema.Addon{Type: t}
		}
		if addons, err = json.Marshal(as); err != nil {
			return err
		}
	}
	err := db.QueryRow(ctx, `INSERT INTO projects (id, name, namespace, pod_name, pod_selector, container,
		workdir, git_remote, git_branch, commit_author_name, commit_author_email, max_concurrent, callback_secret,
		status, managed, addons, provision_started_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
			CASE WHEN $15::jsonb IS NULL THEN NULL ELSE now() END) RETURNING created_at`,
		p.ID, p.Name, p.Namespace, p.PodName, p.PodSelector, p.Container, p.Workdir, p.GitRemote,
		p.GitBranch, p.AuthorName, p.AuthorEmail, p.MaxConcurrent, p.CallbackSecret,
		string(p.Status), managed, addons).Scan(&p.CreatedAt)
	if isUniqueViolation(err) {
		return fmt.Errorf("project %q: %w", p.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("inserting project %q: %w", p.Name, err)
	}
	if m == nil {
		return nil
	}
	p.Managed = true
	repo, ws := m.Repository, m.Workspace
	p.Repository, p.Workspace = &repo, &ws
	_ = json.Unmarshal(addons, &p.Addons)
	p.Provisioning = &schema.Provisioning{StartedAt: p.CreatedAt}
	for i, name := range steps {
		if _, err := db.Exec(ctx, `INSERT INTO project_steps (project_id, seq, name) VALUES ($1, $2, $3)`, p.ID, i, name); err != nil {
			return fmt.Errorf("inserting step %s of project %s: %w", name, p.ID, err)
		}
		p.Provisioning.Steps = append(p.Provisioning.Steps, schema.ProvisioningStep{Name: name, Status: schema.StepPending})
	}
	return nil
}

// GetProject returns the live (not deleted) project with id, with its steps.
func GetProject(ctx context.Context, db DB, id string) (*schema.Project, error) {
	r, err := GetProjectRow(ctx, db, id)
	if err != nil {
		return nil, err
	}
	return &r.Project, nil
}

// GetProjectTarget is GetProject without the provisioning steps (one query,
// not two): what launching a build needs, on every attempt of every build.
// The status and a failure's step and error are there.
func GetProjectTarget(ctx context.Context, db DB, id string) (*schema.Project, error) {
	r, err := liveProject(ctx, db, "id", id, "")
	if err != nil {
		return nil, err
	}
	return &r.Project, nil
}

// liveProject reads the live (not deleted) project whose column key (id or
// name) is value, without its steps; suffix ends the statement (" FOR UPDATE").
func liveProject(ctx context.Context, db DB, key, value, suffix string) (*ProjectRow, error) {
	r, err := scanProjectRow(db.QueryRow(ctx, `SELECT `+projectColumns+` FROM projects WHERE `+key+` = $1 AND status <> 'deleted'`+suffix, value))
	if err != nil {
		return nil, notFound(err, "project "+value)
	}
	return r, nil
}

// GetProjectRow is GetProject with what only the dispatcher reads.
func GetProjectRow(ctx context.Context, db DB, id string) (*ProjectRow, error) {
	r, err := liveProject(ctx, db, "id", id, "")
	if err != nil {
		return nil, err
	}
	return r, withSteps(ctx, db, &r.Project)
}

// LockProjectRow is GetProjectRow that locks the row (FOR UPDATE) in tx.
func LockProjectRow(ctx context.Context, tx pgx.Tx, id string) (*ProjectRow, error) {
	r, err := liveProject(ctx, tx, "id", id, " FOR UPDATE")
	if err != nil {
		return nil, err
	}
	return r, withSteps(ctx, tx, &r.Project)
}

func withSteps(ctx context.Context, db DB, p *schema.Project) error {
	return withStepsAll(ctx, db, []*schema.Project{p})
}

// withStepsAll fills in the provisioning steps of the managed projects
// among ps, all in one query.
func withStepsAll(ctx context.Context, db DB, ps []*schema.Project) error {
	byID := map[string]*schema.Project{}
	ids := []string{}
	for _, p := range ps {
		if p.Managed {
			byID[p.ID] = p
			ids = append(ids, p.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := db.Query(ctx, `SELECT project_id::text, name, status, error, attempts, started_at, finished_at
		FROM project_steps WHERE project_id = ANY($1::uuid[]) ORDER BY project_id, seq`, ids)
	if err != nil {
		return fmt.Errorf("reading the steps of %d projects: %w", len(ids), err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, st string
		var s schema.ProvisioningStep
		if err := rows.Scan(&id, &s.Name, &st, &s.Error, &s.Attempts, &s.StartedAt, &s.FinishedAt); err != nil {
			return fmt.Errorf("reading the steps of %d projects: %w", len(ids), err)
		}
		s.Status = schema.StepStatus(st)
		p := byID[id]
		p.Provisioning.Steps = append(p.Provisioning.Steps, s)
	}
	return rows.Err()
}

// ProjectStatusOf returns a live project's status.
func ProjectStatusOf(ctx context.Context, db DB, id string) (schema.ProjectStatus, error) {
	var s string
	err := db.QueryRow(ctx, `SELECT status FROM projects WHERE id = $1 AND status <> 'deleted'`, id).Scan(&s)
	return schema.ProjectStatus(s), notFound(err, "project "+id)
}

// StepUpdate changes one step; empty fields are left as they are.
type StepUpdate struct {
	Status  schema.StepStatus
	Error   *string // nil: unchanged
	Attempt bool    // count an attempt (and set started_at on the first)
	Finish  bool    // set finished_at
}

// UpdateStep applies u to the project's step name.
func UpdateStep(ctx context.Context, db DB, projectID, name string, u StepUpdate) error {
	_, err := db.Exec(ctx, `UPDATE project_steps SET
		status = $3,
		error = COALESCE($4, error),
		attempts = attempts + CASE WHEN $5 THEN 1 ELSE 0 END,
		started_at = CASE WHEN $5 AND started_at IS NULL THEN now() ELSE started_at END,
		finished_at = CASE WHEN $6 THEN now() ELSE finished_at END
		WHERE project_id = $1 AND name = $2`, projectID, name, string(u.Status), u.Error, u.Attempt, u.Finish)
	if err != nil {
		return fmt.Errorf("updating step %s of project %s: %w", name, projectID, err)
	}
	return nil
}

// SetProjectAddons records the environment names each add-on set.
func SetProjectAddons(ctx context.Context, db DB, id string, addons []schema.Addon) error {
	b, err := json.Marshal(addons)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, `UPDATE projects SET addons = $2 WHERE id = $1`, id, b)
	return err
}

// ErrProjectState is returned when a project is not in the status a change needs.
var ErrProjectState = errors.New("project is not in the required status")

// SetProjectStatus moves a live project from one of from to to. With
// failedStep/errMsg (status failed) the failure is recorded; to ready sets
// ready_at; to deleted sets deleted_at.
func SetProjectStatus(ctx context.Context, db DB, id string, from []schema.ProjectStatus, to string, failedStep, errMsg string) error {
	fs := make([]string, len(from))
	for i, f := range from {
		fs[i] = string(f)
	}
	tag, err := db.Exec(ctx, `UPDATE projects SET status = $3,
		failed_step = CASE WHEN $3 = 'failed' THEN $4 ELSE failed_step END,
		provision_error = CASE WHEN $3 = 'failed' THEN $5 ELSE provision_error END,
		ready_at = CASE WHEN $3 = 'ready' THEN now() ELSE ready_at END,
		deleted_at = CASE WHEN $3 = 'deleted' THEN now() ELSE deleted_at END
		WHERE id = $1 AND status = ANY($2)`, id, fs, to, failedStep, errMsg)
	if err != nil {
		return fmt.Errorf("setting project %s %s: %w", id, to, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("project %s to %s: %w", id, to, ErrProjectState)
	}
	return nil
}

// ActiveBuildIDs returns the ids of a project's pending and running builds.
func ActiveBuildIDs(ctx context.Context, db DB, projectID string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT id::text FROM builds WHERE project_id = $1 AND status IN ('pending', 'running') ORDER BY id`, projectID)
	if err != nil {
		return nil, fmt.Errorf("listing active builds of project %s: %w", projectID, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// GetProjectByName returns the live project called name.
func GetProjectByName(ctx context.Context, db DB, name string) (*schema.Project, error) {
	r, err := liveProject(ctx, db, "name", name, "")
	if err != nil {
		return nil, err
	}
	return &r.Project, withSteps(ctx, db, &r.Project)
}

// ProjectCallbackSecret returns the secret a project's callbacks are signed
// with (a retired project's too: its builds' callbacks are still delivered).
func ProjectCallbackSecret(ctx context.Context, db DB, id string) (string, error) {
	var s string
	err := db.QueryRow(ctx, `SELECT callback_secret FROM projects WHERE id = $1`, id).Scan(&s)
	return s, notFound(err, "project "+id)
}

// ListProjects returns live projects ordered by name; only those in ids unless ids is nil.
func ListProjects(ctx context.Context, db DB, ids []string) ([]*schema.Project, error) {
	q := `SELECT ` + projectColumns + ` FROM projects WHERE status <> 'deleted'`
	args := []any{}
	if ids != nil {
		q += ` AND id = ANY($1::uuid[])`
		args = append(args, ids)
	}
	rows, err := db.Query(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing projects: %w", err)
	}
	defer rows.Close()
	out := []*schema.Project{}
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, withStepsAll(ctx, db, out)
}

// RecordProvisionFailure records the step a provisioning project failed at
// and why, while its rollback runs (its status stays provisioning until then).
func RecordProvisionFailure(ctx context.Context, db DB, id, step, msg string) error {
	_, err := db.Exec(ctx, `UPDATE projects SET failed_step = $2, provision_error = $3 WHERE id = $1 AND status = 'provisioning'`, id, step, msg)
	if err != nil {
		return fmt.Errorf("recording the failure of project %s: %w", id, err)
	}
	return nil
}
