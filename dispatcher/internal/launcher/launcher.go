// Package launcher turns a pending build into a running one: it decides
// whether capacity allows it (a global maximum, a per-project maximum, FIFO
// within a project), records why a build waits when it does not (a
// schema.WaitingReason on the build, and an info event at each change of it),
// renders the build's Job and Secret with jobtemplates and creates them. It
// is called by the River dispatch worker; tracking the Job afterwards is the
// watcher's job.
package launcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// What a waiting build's info event says, for people; the code it carries
// (schema.WaitingReason) is what programs read.
const (
	WaitGlobal  = "waiting for capacity: the dispatcher's maximum of builds in flight is reached"
	WaitProject = "waiting for capacity: the project's maximum of running builds is reached"
	WaitFIFO    = "waiting for capacity: an older build of this project goes first"
	WaitSession = "waiting for capacity: another follow-up is continuing the same agent session"
	WaitQuota   = "waiting for capacity: the namespace's ResourceQuota is exceeded"
	// WaitProvisioning: the build's project is still being provisioned.
	WaitProvisioning = "waiting for the project: project provisioning"
)

// Wait is why a pending build does not launch now: the code recorded on
// the build and the text of the info event that tells a change of it.
type Wait struct {
	Reason  schema.WaitingReason
	Message string
}

// The waits the launcher records.
var (
	waitFIFO         = Wait{schema.WaitingProjectBusy, WaitFIFO}
	waitSession      = Wait{schema.WaitingProjectBusy, WaitSession}
	waitProject      = Wait{schema.WaitingProjectBusy, WaitProject}
	waitGlobal       = Wait{schema.WaitingCapacity, WaitGlobal}
	waitProvisioning = Wait{schema.WaitingProjectProvisioning, WaitProvisioning}
)

// waitQuota is the wait of a build whose Job the namespace's ResourceQuota
// refused; detail is the API's message.
func waitQuota(detail string) Wait {
	return Wait{schema.WaitingQuota, WaitQuota + ": " + detail}
}

// Defaults of Options; the dispatcher's configuration (dispatcher/internal/config) shows these.
const (
	DefaultNamespace   = "kiln-builds"
	DefaultMaxInFlight = 50
	DefaultRetryAfter  = 2 * time.Second
	// DefaultAdmitInterval is how often Run looks for room besides being
	// kicked: what bounds the wait of a slot another replica freed.
	DefaultAdmitInterval = time.Second
	// DefaultWaitRecheck is how long a build waiting for capacity sleeps
	// while Run admits builds (which wakes it when a round chooses it):
	// its own look is only a safety net, and thousands of waiting builds
	// looking every RetryAfter would keep the launch lock busy.
	DefaultWaitRecheck = 30 * time.Second
	// DefaultRecheckRate bounds those safety-net looks, all replicas
	// together: with W builds waiting each sleeps W/rate seconds when that
	// is longer than WaitRecheck, so a backlog of 5,000 looks 20 times a
	// second, not 170 (5,000/30 s), and their cost does not grow with it.
	DefaultRecheckRate = 20
)

// Options configures New.
type Options struct {
	Client        kubernetes.Interface  // required
	Pool          *pgxpool.Pool         // required
	Lifecycle     *lifecycle.Lifecycle  // required
	Templates     *jobtemplates.Catalog // default: jobtemplates.Embedded()
	Namespace     string                // where Jobs run; default DefaultNamespace
	DispatcherURL string                // as seen from the Job's pod; required
	Image         string                // overrides every template's runner image when set
	MaxInFlight   int                   // builds running or launching at once, all projects; default DefaultMaxInFlight
	RetryAfter    time.Duration         // how soon a waiting build is looked at again (while Run does not run, or waits for quota or provisioning); default DefaultRetryAfter
	// River wakes the dispatch jobs of builds an admission round reserved
	// (any client on the database, insert-only is enough); nil: they
	// launch when their snooze ends.
	River         *river.Client[pgx.Tx]
	AdmitInterval time.Duration // see DefaultAdmitInterval
	WaitRecheck   time.Duration // see DefaultWaitRecheck
	RecheckRate   float64       // see DefaultRecheckRate
	Logger        *slog.Logger
	// OnLaunch is told of each attempt at creating a Job: how long it took
	// and, when it failed, why (a LaunchError); may be nil.
	OnLaunch func(b *store.Build, took time.Duration, failed LaunchError)
}

// Launcher creates build Jobs.
type Launcher struct {
	o       Options
	logger  *slog.Logger
	kick    chan struct{}
	looping atomic.Bool // Run runs: waiting builds are woken by its rounds

	mu         sync.Mutex
	waitingN   int       // builds waiting for a slot, as last counted; guarded by mu
	waitingAge time.Time // when; guarded by mu
}

// New returns a Launcher.
func New(o Options) (*Launcher, error) {
	if o.Client == nil || o.Pool == nil || o.Lifecycle == nil || o.DispatcherURL == "" {
		return nil, errors.New("launcher: Client, Pool, Lifecycle and DispatcherURL are required")
	}
	o.Namespace = cmp.Or(o.Namespace, DefaultNamespace)
	o.MaxInFlight = cmp.Or(o.MaxInFlight, DefaultMaxInFlight)
	o.RetryAfter = cmp.Or(o.RetryAfter, DefaultRetryAfter)
	o.AdmitInterval = cmp.Or(o.AdmitInterval, DefaultAdmitInterval)
	o.WaitRecheck = cmp.Or(o.WaitRecheck, DefaultWaitRecheck)
	o.RecheckRate = cmp.Or(o.RecheckRate, DefaultRecheckRate)
	if o.MaxInFlight < 0 || o.RetryAfter < 0 || o.AdmitInterval < 0 || o.WaitRecheck < 0 || o.RecheckRate < 0 {
		return nil, errors.New("launcher: MaxInFlight, RetryAfter, AdmitInterval, WaitRecheck and RecheckRate must not be negative")
	}
	if o.Templates == nil {
		o.Templates = jobtemplates.Embedded()
	}
	logger := cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	return &Launcher{o: o, logger: logger.With("component", "launcher"), kick: make(chan struct{}, 1)}, nil
}

// Namespace is where the launcher creates Jobs.
func (l *Launcher) Namespace() string { return l.o.Namespace }

// Launch implements queue.Launcher.
func (l *Launcher) Launch(ctx context.Context, b *store.Build) error {
	p, settled, err := l.projectGate(ctx, b)
	if settled || err != nil {
		return err
	}
	if settled, err := l.followupGate(ctx, b); settled || err != nil {
		return err
	}
	reserved, was, wait, err := l.reserve(ctx, b)
	if err != nil {
		return err
	}
	if !reserved {
		l.waiting(ctx, b.ID, wait)
		return river.JobSnooze(l.recheck(ctx))
	}
	return l.create(ctx, b, p, was)
}

// recheck is how long a build that waits for a slot sleeps before it looks
// again by itself: RetryAfter unless Run's rounds wake it; with them
// WaitRecheck, or longer with a backlog (RecheckRate).
func (l *Launcher) recheck(ctx context.Context) time.Duration {
	if !l.looping.Load() || l.o.River == nil {
		return l.o.RetryAfter
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.waitingAge) > l.o.AdmitInterval {
		n, err := store.CountWaiting(ctx, l.o.Pool)
		if err != nil {
			return l.o.WaitRecheck // the count is an optimisation; the look is not lost
		}
		l.waitingN, l.waitingAge = n, time.Now()
	}
	return max(l.o.WaitRecheck, time.Duration(float64(l.waitingN)/l.o.RecheckRate*float64(time.Second)))
}

// Kick asks Run for an admission round now: a build ended, so a slot may be
// free. It never blocks; kicks while a round is due are one round.
func (l *Launcher) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run admits waiting builds until ctx ends: a round when kicked and every
// AdmitInterval (which bounds how long a slot freed by another replica, or
// a kick lost with a crash, stays empty). Each round fills the free slots in
// fair order and wakes the chosen builds' dispatch jobs; each tick it also
// wakes reserved builds whose job went to sleep.
func (l *Launcher) Run(ctx context.Context) {
	l.looping.Store(true)
	defer l.looping.Store(false)
	tick := time.NewTicker(l.o.AdmitInterval)
	defer tick.Stop()
	for {
		ticked := false
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-tick.C:
			ticked = true
		}
		if err := l.round(ctx, ticked); err != nil && ctx.Err() == nil {
			l.logger.WarnContext(ctx, "admission round failed; the next one retries", "error", err)
		}
	}
}

// round is one of Run's admission rounds; sweep also wakes the dispatch
// jobs of reserved builds that sleep (store.StaleReservations).
func (l *Launcher) round(ctx context.Context, sweep bool) error {
	waiting, err := store.AnyWaiting(ctx, l.o.Pool)
	if err != nil || (!waiting && !sweep) {
		return err
	}
	return pgx.BeginFunc(ctx, l.o.Pool, func(tx pgx.Tx) error {
		if waiting {
			if err := store.LockLaunches(ctx, tx); err != nil {
				return err
			}
			if _, err := l.admit(ctx, tx, ""); err != nil {
				return err
			}
		}
		if !sweep {
			return nil
		}
		stale, err := store.StaleReservations(ctx, tx)
		if err != nil {
			return err
		}
		return l.wake(ctx, tx, stale)
	})
}

// projectGate holds a build whose project is not ready: it waits while the
// project provisions, fails when provisioning failed (naming the step) and
// is cancelled when the project is being deleted. settled reports that the
// build went no further.
func (l *Launcher) projectGate(ctx context.Context, b *store.Build) (p *schema.Project, settled bool, err error) {
	p, err = store.GetProjectTarget(ctx, l.o.Pool, b.ProjectID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, true, l.settle(l.o.Lifecycle.Cancel(ctx, b.ID, "the project was deleted"))
	case err != nil:
		return nil, true, err
	}
	switch p.Status {
	case schema.ProjectReady:
		return p, false, nil
	case schema.ProjectProvisioning:
		l.waiting(ctx, b.ID, waitProvisioning)
		return nil, true, river.JobSnooze(l.o.RetryAfter)
	case schema.ProjectFailed:
		msg := "project " + p.Name + " failed to provision"
		if pr := p.Provisioning; pr != nil && pr.FailedStep != "" {
			msg += " at step " + pr.FailedStep + ": " + pr.Error
		}
		return nil, true, l.settle(l.o.Lifecycle.Fail(ctx, b.ID, schema.ReasonProvisioning, msg))
	default: // deleting
		return nil, true, l.settle(l.o.Lifecycle.Cancel(ctx, b.ID, "project "+p.Name+" is being deleted"))
	}
}

// followupGate fails, without a Job, a follow-up that cannot continue its
// earlier build's session because that build never started the agent (its
// result names no session) and that did not ask for fallback fresh. A
// session that exists in the database may still be gone from the pod: the
// runner checks that. settled reports that the build went no further.
func (l *Launcher) followupGate(ctx context.Context, b *store.Build) (settled bool, err error) {
	if b.ParentID == "" || b.Spec.Fallback == schema.FallbackFresh {
		return false, nil
	}
	parent, err := store.GetBuild(ctx, l.o.Pool, b.ParentID)
	if err != nil {
		return true, err
	}
	if parent.Result != nil && parent.Result.SessionID != "" {
		return false, nil
	}
	msg := fmt.Sprintf("build %s never started the agent: no session to continue; ask for fallback %q to start a new one",
		parent.ID, schema.FallbackFresh)
	return true, l.settle(l.o.Lifecycle.Fail(ctx, b.ID, schema.ReasonSessionUnavailable, msg))
}

// settle is the error of a lifecycle change that ends a build here: none
// when it worked or the build was already terminal.
func (l *Launcher) settle(_ *store.Build, err error) error {
	if errors.Is(err, lifecycle.ErrTerminal) {
		return nil
	}
	return err
}

// reserve takes a launch slot for b under a lock shared by every replica,
// through an admission round (admit): the round fills every free slot in
// fair order, so b gets one only if it is among the builds the round
// chooses. When it does, was is the reason b waited for until then
// (Unreserve puts it back); when it does not, wait says why.
func (l *Launcher) reserve(ctx context.Context, b *store.Build) (ok bool, was schema.WaitingReason, wait Wait, err error) {
	if b.JobName == "" && l.looping.Load() && l.o.River != nil {
		// With every slot taken a round could choose nothing, and the round
		// that frees one wakes b if b is next: skip the lock, which a
		// backlog's first looks (thousands of them at once) would
		// otherwise queue on. The figures are read without the lock; they
		// name the reason only, the decision is a round's.
		c, err := store.LaunchCapacity(ctx, l.o.Pool, b)
		if err != nil {
			return false, "", Wait{}, fmt.Errorf("reading launch capacity for build %s: %w", b.ID, err)
		}
		if c.InFlight >= l.o.MaxInFlight {
			_, why := Admit(c, l.o.MaxInFlight)
			return false, "", why, nil
		}
	}
	err = pgx.BeginFunc(ctx, l.o.Pool, func(tx pgx.Tx) error {
		cur, err := store.LockLaunchesFor(ctx, tx, b.ID)
		if err != nil {
			return err
		}
		if cur.Status != schema.StatusPending {
			return nil
		}
		if cur.JobName != "" { // reserved by an earlier attempt, or by a round
			ok = true
			return nil
		}
		if ok, err = l.admit(ctx, tx, b.ID); ok || err != nil {
			was = cur.WaitingReason
			return err
		}
		c, err := store.LaunchCapacity(ctx, tx, b) // its project and parent never change
		if err != nil {
			return err
		}
		if admit, why := Admit(c, l.o.MaxInFlight); !admit {
			wait = why
		} else {
			// Room for it, yet others came first in the round's order.
			wait = waitGlobal
		}
		return nil
	})
	if err != nil {
		return false, "", Wait{}, fmt.Errorf("reserving a launch of build %s: %w", b.ID, err)
	}
	return ok, was, wait, nil
}

// admit runs an admission round in tx, under the launch lock: it chooses
// builds for the free slots (store.NextAdmissions: fair share across
// projects, then round-robin, FIFO within a project), reserves them and
// wakes their dispatch jobs — all but self's, the build whose dispatch job
// runs the round ("" for Run's rounds), which goes on to launch it when
// the round chose it (chosen reports that).
func (l *Launcher) admit(ctx context.Context, tx pgx.Tx, self string) (chosen bool, err error) {
	admitted, err := store.NextAdmissions(ctx, tx, l.o.MaxInFlight, self)
	if err != nil {
		return false, err
	}
	if err := store.Admit(ctx, tx, admitted, jobtemplates.JobName); err != nil {
		return false, err
	}
	var jobs []int64
	for _, a := range admitted {
		switch {
		case a.ID == self:
			chosen = true
		case a.RiverJobID != 0:
			jobs = append(jobs, a.RiverJobID)
		}
	}
	return chosen, l.wake(ctx, tx, jobs)
}

// wake makes the dispatch jobs of builds a round reserved run now, with
// the round's transaction: a reserved build's job creates its Job at once
// instead of at the end of its snooze. Without a River client there is
// nothing to wake them with; they launch when their snooze ends.
func (l *Launcher) wake(ctx context.Context, tx pgx.Tx, jobs []int64) error {
	if l.o.River == nil {
		return nil
	}
	for _, id := range jobs {
		if _, err := l.o.River.JobRetryTx(ctx, tx, id); err != nil && !errors.Is(err, river.ErrNotFound) {
			return fmt.Errorf("waking dispatch job %d: %w", id, err)
		}
	}
	return nil
}

// Admit decides whether a pending build may launch now, given the capacity
// it sees and the global maximum; when not, it says why. Order matters:
// FIFO within the project first, then a follow-up whose agent session
// another build in flight continues, then the project's limit (all
// project_busy: the build waits for its project), then the global one
// (capacity: its project would take it, the dispatcher cannot).
func Admit(c store.Capacity, maxInFlight int) (bool, Wait) {
	switch {
	case c.OlderPending:
		return false, waitFIFO
	case c.SessionBusy:
		return false, waitSession
	case c.ProjectInFlight >= c.MaxConcurrent:
		return false, waitProject
	case c.InFlight >= maxInFlight:
		return false, waitGlobal
	}
	return true, Wait{}
}

// waiting records why a build waits and, when the reason changed, tells it
// in an info event (with the build's queue position), in one transaction: a
// change is never recorded without its event.
func (l *Launcher) waiting(ctx context.Context, id string, w Wait) {
	err := pgx.BeginFunc(ctx, l.o.Pool, func(tx pgx.Tx) error {
		changed, pos, err := store.SetWaiting(ctx, tx, id, w.Reason)
		if err != nil || !changed {
			return err
		}
		_, err = store.AppendEvent(ctx, tx, id, schema.EventInfo,
			schema.InfoPayload{Message: w.Message, WaitingReason: w.Reason, QueuePosition: pos})
		return err
	})
	if err != nil && ctx.Err() == nil { // a shutdown's cancel is no failure: the job runs again
		l.logger.WarnContext(ctx, "recording wait", "build_id", id, "reason", w.Reason, "error", err)
	}
}

// create makes the Job and its Secret (each only if absent) and marks the
// build running. Every step is safe to repeat after a crash.
// was is the reason the build waited for before its reservation.
func (l *Launcher) create(ctx context.Context, b *store.Build, p *schema.Project, was schema.WaitingReason) error {
	start := time.Now()
	tmpl, err := l.o.Templates.Resolve(b.Spec.TemplateName())
	if err != nil {
		return l.failBuild(ctx, b, fmt.Sprintf("template %q: %v", b.Spec.TemplateName(), err))
	}
	token, hash := auth.NewToken()
	job, secret, err := jobtemplates.Render(jobtemplates.RenderInput{Build: b.Build, Project: *p, Template: tmpl,
		Namespace: l.o.Namespace, DispatcherURL: l.o.DispatcherURL, RunnerToken: token, Image: l.o.Image})
	if err != nil {
		return l.failBuild(ctx, b, "rendering the Job: "+err.Error())
	}
	jobs := l.o.Client.BatchV1().Jobs(l.o.Namespace)
	created, err := jobs.Create(ctx, job, metav1.CreateOptions{})
	failed, retry := ClassifyLaunchError(err), apierrors.IsAlreadyExists(err)
	switch {
	case retry:
		created, err = jobs.Get(ctx, job.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("getting job %s: %w", job.Name, err)
		}
	case failed == LaunchQuota:
		l.report(b, start, failed)
		if uerr := store.Unreserve(ctx, l.o.Pool, b.ID, was); uerr != nil {
			return uerr
		}
		l.waiting(ctx, b.ID, waitQuota(apiMessage(err)))
		return river.JobSnooze(l.o.RetryAfter)
	case failed == LaunchInvalid:
		l.report(b, start, failed)
		return l.failBuild(ctx, b, "the Kubernetes API rejected the Job: "+apiMessage(err))
	case err != nil:
		l.report(b, start, failed)
		return fmt.Errorf("creating job %s: %w", job.Name, err) // River retries with backoff
	}

	// The Secret comes second so it can be owned by the Job (garbage-collected
	// with it); until it exists the pod waits in CreateContainerConfigError.
	if err := l.ensureSecret(ctx, b.ID, jobtemplates.OwnedBy(secret, created), hash, retry); err != nil {
		return err
	}

	_, err = l.o.Lifecycle.Start(ctx, b.ID, job.Name)
	if errors.Is(err, lifecycle.ErrTerminal) {
		// Cancelled while we created it: the watcher deletes the Job.
		return nil
	}
	if err != nil {
		return err
	}
	l.report(b, start, "")
	l.logger.InfoContext(ctx, "build launched", "build_id", b.ID, "job", job.Name, "namespace", l.o.Namespace,
		"queued_ms", start.Sub(b.CreatedAt).Milliseconds(), "launch_ms", time.Since(start).Milliseconds())
	return nil
}

// ensureSecret creates the build's Secret, storing its token's hash first so
// a runner never holds a token the dispatcher does not know. On a retry (the
// Job existed) an earlier attempt may have made the Secret, and its pod may
// hold that token: it is looked for first and kept, its hash stored instead.
func (l *Launcher) ensureSecret(ctx context.Context, id string, secret *corev1.Secret, hash []byte, retry bool) error {
	secrets := l.o.Client.CoreV1().Secrets(l.o.Namespace)
	var existing *corev1.Secret
	var err error
	if retry {
		existing, err = secrets.Get(ctx, secret.Name, metav1.GetOptions{})
	}
	if !retry || apierrors.IsNotFound(err) {
		if err := store.SetRunnerTokenHash(ctx, l.o.Pool, id, hash); err != nil {
			return err
		}
		_, err = secrets.Create(ctx, secret, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			if err != nil {
				return fmt.Errorf("creating secret %s: %w", secret.Name, err)
			}
			return nil
		}
		existing, err = secrets.Get(ctx, secret.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("getting secret %s: %w", secret.Name, err)
	}
	return store.SetRunnerTokenHash(ctx, l.o.Pool, id, auth.Hash(string(existing.Data[jobtemplates.SecretKeyRunnerToken])))
}

func (l *Launcher) report(b *store.Build, start time.Time, failed LaunchError) {
	if l.o.OnLaunch != nil {
		l.o.OnLaunch(b, time.Since(start), failed)
	}
}

// failBuild fails a build the launcher cannot make a Job for: its template is
// unknown, it cannot be rendered, or the API refuses it as invalid.
func (l *Launcher) failBuild(ctx context.Context, b *store.Build, msg string) error {
	_, err := l.o.Lifecycle.Fail(ctx, b.ID, schema.ReasonInvalidJob, msg)
	if err != nil && !errors.Is(err, lifecycle.ErrTerminal) {
		return err
	}
	l.logger.WarnContext(ctx, "build failed at launch", "build_id", b.ID, "reason", schema.ReasonInvalidJob, "error", msg)
	return nil
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}
