// Package lifecycle owns every change of a build's status: accept, start,
// complete, fail and cancel. The API (through intake), the runner protocol,
// the launcher and the watcher all call it, so the rules hold in one place:
// a terminal status is final (a late or duplicate result is ignored and
// logged), a failure carries a typed schema.Reason, and a terminal build's
// callback job is inserted in the same transaction as its status
// (docs/design.md, invariants 4 and 6).
//
// It does not talk to Kubernetes and does not decide why a build failed: its
// callers know that and say so with a reason.
package lifecycle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// ErrTerminal is returned for a change asked of a build whose status is
// final (or, for Start, that is no longer pending). It is store.ErrTerminal.
var ErrTerminal = store.ErrTerminal

// DefaultMaxOutputBytes bounds a result's output; the rest is cut off.
const DefaultMaxOutputBytes = 256 << 10

// Options configures New.
type Options struct {
	// Pool is where builds live; required.
	Pool *pgxpool.Pool
	// River inserts the dispatch and callback jobs and cancels a pending
	// build's dispatch job, in the transaction of the change. An insert-only
	// client (no workers) is enough; required.
	River *river.Client[pgx.Tx]
	// OnTransition is told of every status change once its transaction has
	// committed (metrics, wake-ups); nil: nobody. It must not block.
	OnTransition func(b *store.Build)
	// OnStoppedResult is told when a stopped runner's account was kept on
	// a build that had no result (KeepStoppedResult); nil: nobody. It must not block.
	OnStoppedResult func(b *store.Build)
	// MaxOutputBytes bounds a result's output; default DefaultMaxOutputBytes.
	MaxOutputBytes int
	// Logger; default: discard.
	Logger *slog.Logger
}

// Lifecycle changes build statuses.
type Lifecycle struct {
	pool      *pgxpool.Pool
	river     *river.Client[pgx.Tx]
	observe   func(b *store.Build)
	stopped   func(b *store.Build)
	maxOutput int
	logger    *slog.Logger
}

// New returns a Lifecycle.
func New(o Options) (*Lifecycle, error) {
	if o.Pool == nil || o.River == nil {
		return nil, errors.New("lifecycle: Pool and River are required")
	}
	l := &Lifecycle{pool: o.Pool, river: o.River, observe: o.OnTransition, stopped: o.OnStoppedResult,
		maxOutput: cmp.Or(o.MaxOutputBytes, DefaultMaxOutputBytes),
		logger:    cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "lifecycle")}
	if l.maxOutput < 0 {
		return nil, errors.New("lifecycle: MaxOutputBytes must not be negative")
	}
	return l, nil
}

// Committed reports changes made inside a caller's transaction (AcceptTx)
// once that transaction has committed.
func (l *Lifecycle) Committed(bs ...*store.Build) {
	for _, b := range bs {
		if l.observe != nil && b != nil {
			l.observe(b)
		}
	}
}

// Start moves a pending build to running once its Job exists. A build no
// longer pending (cancelled while its Job was being made) returns ErrTerminal.
func (l *Lifecycle) Start(ctx context.Context, id, jobName string) (*store.Build, error) {
	return l.now(ctx, id, store.Transition{To: schema.StatusRunning, JobName: jobName,
		From: []schema.Status{schema.StatusPending}})
}

// Fail ends a build as failed for reason; msg says it to people. A build
// already terminal keeps its status and Fail returns ErrTerminal.
func (l *Lifecycle) Fail(ctx context.Context, id string, reason schema.Reason, msg string) (*store.Build, error) {
	if !reason.Valid() || reason == schema.ReasonNone || reason == schema.ReasonCancelled {
		return nil, fmt.Errorf("failing build %s: %q is not a failure reason", id, reason)
	}
	b, err := l.now(ctx, id, store.Transition{To: schema.StatusFailed, Reason: reason, Error: store.Storable(msg)})
	if err == nil {
		l.logger.InfoContext(ctx, "build failed", "build_id", id, "reason", reason, "error", msg)
	}
	return b, err
}

// Cancel ends a pending or running build as cancelled; msg says by whom or
// why. A pending build's dispatch job is cancelled in the same transaction;
// a running build's Job is removed by the watcher, told through OnTransition.
// A terminal build returns ErrTerminal.
func (l *Lifecycle) Cancel(ctx context.Context, id, msg string) (*store.Build, error) {
	var out *store.Build
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var err error
		out, err = l.transitionTx(ctx, tx, id, store.Transition{To: schema.StatusCancelled, Reason: schema.ReasonCancelled, Error: store.Storable(msg)})
		if err != nil {
			return err
		}
		if out.RiverJobID != 0 {
			if _, err := l.river.JobCancelTx(ctx, tx, out.RiverJobID); err != nil && !errors.Is(err, river.ErrNotFound) {
				return fmt.Errorf("cancelling river job %d: %w", out.RiverJobID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	l.Committed(out)
	return out, nil
}

// CancelProject cancels every pending and running build of a project (a
// retired one); builds that end meanwhile are left as they ended.
func (l *Lifecycle) CancelProject(ctx context.Context, projectID, msg string) error {
	ids, err := store.ActiveBuildIDs(ctx, l.pool, projectID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := l.Cancel(ctx, id, msg); err != nil && !errors.Is(err, ErrTerminal) {
			return fmt.Errorf("cancelling build %s: %w", id, err)
		}
	}
	return nil
}

// Finish applies a runner's result (source says where it came from: the
// runner protocol, a termination message). A successful result completes the
// build; a failed one fails it with the runner's reason (runner_error when it
// gave none it may give). A runner that stopped on SIGTERM (cancelled: true)
// settles nothing: the build was cancelled already, or the Job was stopped
// for a reason only the cluster knows, which the watcher records. A build
// already terminal keeps its status; the late result is logged and ignored
// (Accepted false).
func (l *Lifecycle) Finish(ctx context.Context, id string, res schema.BuildResult, source string) (schema.ResultAck, error) {
	if res.Cancelled {
		if source == "runner" {
			// What it did (its output, session, kept work) stays with the build.
			if _, err := l.KeepStoppedResult(ctx, id, res); err != nil {
				return schema.ResultAck{}, err
			}
		}
		cur, err := store.GetBuild(ctx, l.pool, id)
		if err != nil {
			return schema.ResultAck{}, err
		}
		l.logger.InfoContext(ctx, "runner reported it stopped; the watcher settles the build", "build_id", id, "status", cur.Status, "source", source)
		return schema.ResultAck{Status: cur.Status, Accepted: false}, nil
	}
	l.storable(&res)
	t := store.Transition{To: schema.StatusCompleted, Result: &res,
		From: []schema.Status{schema.StatusRunning, schema.StatusPending}}
	if res.Success {
		res.Reason, res.Error = schema.ReasonNone, ""
	} else {
		res.Reason = RunnerReason(res.Reason)
		t.To, t.Reason, t.Error = schema.StatusFailed, res.Reason, cmp.Or(res.Error, "the runner reported failure without an error message")
	}
	b, err := l.now(ctx, id, t)
	if errors.Is(err, ErrTerminal) {
		cur, gerr := store.GetBuild(ctx, l.pool, id)
		if gerr != nil {
			return schema.ResultAck{}, gerr
		}
		l.logger.WarnContext(ctx, "late or duplicate result ignored", "build_id", id, "status", cur.Status, "source", source)
		return schema.ResultAck{Status: cur.Status, Accepted: false}, nil
	}
	if err != nil {
		return schema.ResultAck{}, err
	}
	l.logger.InfoContext(ctx, "build finished", "build_id", id, "status", b.Status, "reason", b.Reason, "source", source)
	return schema.ResultAck{Status: b.Status, Accepted: true}, nil
}

// storable makes a result storable: a result read from a pod's termination
// message did not pass the runner protocol's repair, and text Postgres
// cannot store must not keep a build from settling; the output is bounded.
func (l *Lifecycle) storable(res *schema.BuildResult) {
	res.Output, res.Error, res.CommitSHA = store.Storable(res.Output), store.Storable(res.Error), store.Storable(res.CommitSHA)
	for i, f := range res.FilesChanged {
		res.FilesChanged[i] = store.Storable(f)
	}
	if len(res.Output) > l.maxOutput {
		res.Output = res.Output[:l.maxOutput] + "\n[output truncated]"
	}
}

// KeepStoppedResult keeps the account of a runner that settled nothing — it
// reported that it stopped (cancelled: true), or its result came after the
// build had ended (a cancel, a deadline the watcher saw first) — as the
// build's result when the build has none yet: its output, usage, session
// and kept work (partial_branch), so a cancelled build's changes are found
// and it can be followed up. The build's status, reason and error never
// change (invariant 4); a build that already has a result keeps it. Kept
// work is told by an info event. It reports whether the result was kept.
func (l *Lifecycle) KeepStoppedResult(ctx context.Context, id string, res schema.BuildResult) (bool, error) {
	l.storable(&res)
	res.Success = false
	b, err := store.SetStoppedResult(ctx, l.pool, id, res)
	if err != nil || b == nil {
		return false, err
	}
	if p := res.PartialBranch; p != "" {
		msg := fmt.Sprintf("the runner kept the build's changes on %s (commit %s)", p, res.PartialCommitSHA)
		if res.PartialPushed {
			msg += ", pushed"
		}
		if _, err := store.AppendEvent(ctx, l.pool, id, schema.EventInfo, schema.InfoPayload{Message: msg}); err != nil {
			l.logger.WarnContext(ctx, "recording kept work", "build_id", id, "error", err)
		}
	}
	l.logger.InfoContext(ctx, "a stopped runner's result kept", "build_id", id, "status", b.Status,
		"partial_branch", res.PartialBranch)
	if l.stopped != nil {
		l.stopped(b)
	}
	return true, nil
}

// RunnerReason is the reason a failed runner result is recorded with: the
// runner's own when it is one a runner may give, runner_error otherwise (an
// older runner, or one that claims a cluster's reason it cannot know).
func RunnerReason(r schema.Reason) schema.Reason {
	switch r {
	case schema.ReasonAgentError, schema.ReasonMaxTurns, schema.ReasonWorkspace, schema.ReasonGit,
		schema.ReasonPushRejected, schema.ReasonDeadline, schema.ReasonRunnerError,
		schema.ReasonAgentAuth, schema.ReasonAgentBadRequest, schema.ReasonAgentUnavailable, schema.ReasonAgentPushed,
		schema.ReasonBudgetExceeded, schema.ReasonSessionUnavailable:
		return r
	}
	return schema.ReasonRunnerError
}

// AcceptTx writes new pending builds inside the caller's transaction: each
// build's River dispatch job first, then its audit row naming that job, so
// both commit or neither does (invariant 1). The caller reports the builds
// with Committed once the transaction has committed. between runs after the
// jobs are inserted and before the rows are; tests make it fail.
func (l *Lifecycle) AcceptTx(ctx context.Context, tx pgx.Tx, nbs []store.NewBuild, between func(context.Context) error) ([]*store.Build, error) {
	if len(nbs) == 0 {
		return nil, nil
	}
	params := make([]river.InsertManyParams, len(nbs))
	for i, nb := range nbs {
		params[i] = river.InsertManyParams{Args: queue.DispatchArgs{BuildID: nb.ID, ProjectID: nb.ProjectID}}
	}
	res, err := l.river.InsertManyTx(ctx, tx, params)
	if err != nil {
		return nil, fmt.Errorf("enqueueing dispatch of %d builds: %w", len(nbs), err)
	}
	if between != nil {
		if err := between(ctx); err != nil {
			return nil, err
		}
	}
	for i := range nbs {
		nbs[i].RiverJobID = res[i].Job.ID
	}
	created, err := store.InsertBuilds(ctx, tx, nbs)
	if err != nil {
		return nil, err
	}
	out := make([]*store.Build, len(nbs))
	for i, nb := range nbs {
		out[i] = &store.Build{Build: schema.Build{ID: nb.ID, ProjectID: nb.ProjectID, Spec: nb.Spec,
			Status: schema.StatusPending, RequestedBy: nb.RequestedBy, CreatedAt: created[i]}, RiverJobID: nb.RiverJobID}
	}
	return out, nil
}

// now applies t in its own transaction and reports it once committed.
func (l *Lifecycle) now(ctx context.Context, id string, t store.Transition) (*store.Build, error) {
	var b *store.Build
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var err error
		b, err = l.transitionTx(ctx, tx, id, t)
		return err
	})
	if err != nil {
		return nil, err
	}
	l.Committed(b)
	return b, nil
}

// transitionTx applies t to build id inside tx. When the build becomes
// terminal and has a callback_url, the callback delivery job is inserted in
// the same transaction, with its delivery id fixed now so every retry
// carries it (invariant 6).
func (l *Lifecycle) transitionTx(ctx context.Context, tx pgx.Tx, id string, t store.Transition) (*store.Build, error) {
	b, err := store.TransitionBuild(ctx, tx, id, t)
	if err != nil {
		return nil, err
	}
	if b.Status.Terminal() && b.Spec.CallbackURL != "" {
		did, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		if _, err := l.river.InsertTx(ctx, tx, queue.CallbackArgs{BuildID: b.ID, DeliveryID: did.String()}, nil); err != nil {
			return nil, fmt.Errorf("enqueueing callback of build %s: %w", b.ID, err)
		}
	}
	return b, nil
}
