package lifecycle_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle/lifecycletest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's lifecycle on its own schema, with what OnTransition saw.
type env struct {
	db      *pgtest.DB
	lc      *lifecycle.Lifecycle
	project string

	mu   sync.Mutex
	seen []schema.Status // OnTransition's builds' statuses, in order
}

func setup(t *testing.T, edit ...func(*lifecycle.Options)) *env {
	t.Helper()
	t.Parallel()
	db := pgtest.New(t)
	e := &env{db: db}
	o := lifecycle.Options{OnTransition: func(b *store.Build) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.seen = append(e.seen, b.Status)
	}}
	for _, f := range edit {
		f(&o)
	}
	e.lc = lifecycletest.New(t, db, o)
	e.project = apptest.Project(t, db.Pool, "web").ID
	return e
}

// transitions returns what OnTransition has been told so far.
func (e *env) transitions() []schema.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]schema.Status(nil), e.seen...)
}

// accept writes a pending build with its dispatch job, as intake does, and
// reports it committed.
func (e *env) accept(t *testing.T, spec schema.BuildSpec) *store.Build {
	t.Helper()
	ctx := context.Background()
	var out []*store.Build
	require.NoError(t, pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		var err error
		out, err = e.lc.AcceptTx(ctx, tx, []store.NewBuild{{ID: newID(t), ProjectID: e.project, Spec: spec, RequestedBy: "test"}}, nil)
		return err
	}))
	e.lc.Committed(out...)
	return out[0]
}

// running is a build accepted and started.
func (e *env) running(t *testing.T, spec schema.BuildSpec) *store.Build {
	t.Helper()
	b := e.accept(t, spec)
	b, err := e.lc.Start(context.Background(), b.ID, "kiln-build-"+b.ID)
	require.NoError(t, err)
	return b
}

func (e *env) get(t *testing.T, id string) *store.Build {
	t.Helper()
	b, err := store.GetBuild(context.Background(), e.db.Pool, id)
	require.NoError(t, err)
	return b
}

// riverJob is a row of river_job in the test's schema.
type riverJob struct {
	Kind  string
	State string
	Args  map[string]string
}

func (e *env) riverJobs(t *testing.T, kind string) []riverJob {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT kind, state, args FROM river_job WHERE kind = $1 ORDER BY id`, kind)
	require.NoError(t, err)
	defer rows.Close()
	var out []riverJob
	for rows.Next() {
		var j riverJob
		var args []byte
		require.NoError(t, rows.Scan(&j.Kind, &j.State, &args))
		require.NoError(t, json.Unmarshal(args, &j.Args))
		out = append(out, j)
	}
	require.NoError(t, rows.Err())
	return out
}

func newID(t *testing.T) string {
	id, err := uuid.NewV7()
	require.NoError(t, err)
	return id.String()
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := lifecycle.New(lifecycle.Options{})
	require.Error(t, err)

	db := pgtest.New(t)
	rc, err := queue.NewClient(db.Pool, queue.Options{Schema: db.Schema})
	require.NoError(t, err)
	_, err = lifecycle.New(lifecycle.Options{Pool: db.Pool})
	require.Error(t, err, "River is required")
	_, err = lifecycle.New(lifecycle.Options{River: rc})
	require.Error(t, err, "Pool is required")
	_, err = lifecycle.New(lifecycle.Options{Pool: db.Pool, River: rc, MaxOutputBytes: -1})
	require.Error(t, err)
}

func TestStartOnlyFromPending(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.accept(t, schema.BuildSpec{Prompt: "x"})

	got, err := e.lc.Start(ctx, b.ID, "kiln-build-x")
	require.NoError(t, err)
	assert.Equal(t, schema.StatusRunning, got.Status)
	assert.Equal(t, "kiln-build-x", got.JobName)
	assert.Equal(t, 1, got.Attempt)
	assert.NotNil(t, got.StartedAt)
	assert.Nil(t, got.FinishedAt)
	assert.Equal(t, schema.ReasonNone, got.Reason)

	// Running is not pending: a second Start is refused and changes nothing.
	_, err = e.lc.Start(ctx, b.ID, "kiln-build-other")
	require.ErrorIs(t, err, lifecycle.ErrTerminal)
	again := e.get(t, b.ID)
	assert.Equal(t, schema.StatusRunning, again.Status)
	assert.Equal(t, "kiln-build-x", again.JobName)
	assert.Equal(t, 1, again.Attempt)

	// Cancelled while its Job was being made: Start is refused.
	c := e.accept(t, schema.BuildSpec{Prompt: "y"})
	_, err = e.lc.Cancel(ctx, c.ID, "by test")
	require.NoError(t, err)
	_, err = e.lc.Start(ctx, c.ID, "kiln-build-y")
	require.ErrorIs(t, err, lifecycle.ErrTerminal)
	assert.Equal(t, schema.StatusCancelled, e.get(t, c.ID).Status)

	_, err = e.lc.Start(ctx, newID(t), "kiln-build-z")
	require.ErrorIs(t, err, store.ErrNotFound)

	assert.Equal(t, []schema.Status{schema.StatusPending, schema.StatusRunning, schema.StatusPending, schema.StatusCancelled},
		e.transitions(), "refused changes are not reported")
}

func TestFailNeedsAFailureReason(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.running(t, schema.BuildSpec{Prompt: "x"})
	before := e.transitions()

	for _, r := range []schema.Reason{schema.ReasonNone, schema.ReasonCancelled, "unknown", "made_up"} {
		_, err := e.lc.Fail(ctx, b.ID, r, "boom")
		require.Error(t, err, "reason %q", r)
		assert.NotErrorIs(t, err, lifecycle.ErrTerminal, "reason %q", r)
		got := e.get(t, b.ID)
		assert.Equal(t, schema.StatusRunning, got.Status, "reason %q", r)
		assert.Empty(t, got.Error, "reason %q", r)
	}
	assert.Equal(t, before, e.transitions(), "a refused Fail is not reported")

	got, err := e.lc.Fail(ctx, b.ID, schema.ReasonOOM, "out of memory (limit 2Gi)")
	require.NoError(t, err)
	assert.Equal(t, schema.StatusFailed, got.Status)
	assert.Equal(t, schema.ReasonOOM, got.Reason)
	assert.Equal(t, "out of memory (limit 2Gi)", got.Error)
	assert.NotNil(t, got.FinishedAt)
	assert.Equal(t, got.Reason, e.get(t, b.ID).Reason, "stored in the audit row")
}

func TestFailFromPending(t *testing.T) {
	e := setup(t)
	b := e.accept(t, schema.BuildSpec{Prompt: "x", Template: "nope"})
	got, err := e.lc.Fail(context.Background(), b.ID, schema.ReasonInvalidJob, "template \"nope\" unknown")
	require.NoError(t, err)
	assert.Equal(t, schema.StatusFailed, got.Status)
	assert.Equal(t, schema.ReasonInvalidJob, got.Reason)
}

// Invariant 4: a terminal status is final, however it was reached and
// whatever is asked of it later.
func TestTerminalIsFinal(t *testing.T) {
	t.Parallel()
	ends := map[string]func(ctx context.Context, lc *lifecycle.Lifecycle, id string) error{
		"completed": func(ctx context.Context, lc *lifecycle.Lifecycle, id string) error {
			_, err := lc.Finish(ctx, id, schema.BuildResult{Success: true, CommitSHA: "abc"}, "test")
			return err
		},
		"failed": func(ctx context.Context, lc *lifecycle.Lifecycle, id string) error {
			_, err := lc.Fail(ctx, id, schema.ReasonDeadline, "timed out after 1h0m0s")
			return err
		},
		"cancelled": func(ctx context.Context, lc *lifecycle.Lifecycle, id string) error {
			_, err := lc.Cancel(ctx, id, "cancelled by alice")
			return err
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			b := e.running(t, schema.BuildSpec{Prompt: "x", CallbackURL: "https://example.com/hook"})
			require.NoError(t, end(ctx, e.lc, b.ID))
			want := e.get(t, b.ID)
			require.Equal(t, schema.Status(name), want.Status)
			seen := e.transitions()
			require.Len(t, e.riverJobs(t, "kiln_callback"), 1)

			_, err := e.lc.Start(ctx, b.ID, "kiln-build-again")
			assert.ErrorIs(t, err, lifecycle.ErrTerminal, "Start")
			_, err = e.lc.Fail(ctx, b.ID, schema.ReasonOOM, "late")
			assert.ErrorIs(t, err, lifecycle.ErrTerminal, "Fail")
			_, err = e.lc.Cancel(ctx, b.ID, "late")
			assert.ErrorIs(t, err, lifecycle.ErrTerminal, "Cancel")
			for _, res := range []schema.BuildResult{
				{Success: true, CommitSHA: "late"},
				{Success: false, Error: "late", Reason: schema.ReasonGit},
			} {
				ack, err := e.lc.Finish(ctx, b.ID, res, "test")
				require.NoError(t, err, "Finish")
				assert.Equal(t, schema.ResultAck{Status: schema.Status(name), Accepted: false}, ack, "Finish")
			}

			got := e.get(t, b.ID)
			assert.Equal(t, want.Status, got.Status)
			assert.Equal(t, want.Reason, got.Reason)
			assert.Equal(t, want.Error, got.Error)
			assert.Equal(t, want.Result, got.Result)
			assert.Equal(t, want.FinishedAt, got.FinishedAt)
			assert.Equal(t, seen, e.transitions(), "nothing refused is reported")
			assert.Len(t, e.riverJobs(t, "kiln_callback"), 1, "no second callback")
		})
	}
}

func TestFinish(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		res        schema.BuildResult
		wantStatus schema.Status
		wantReason schema.Reason
		wantError  string
	}{
		{name: "success", res: schema.BuildResult{Success: true, CommitSHA: "abc", Reason: schema.ReasonGit, Error: "stale"},
			wantStatus: schema.StatusCompleted},
		{name: "runner reason kept", res: schema.BuildResult{Error: "push refused", Reason: schema.ReasonPushRejected},
			wantStatus: schema.StatusFailed, wantReason: schema.ReasonPushRejected, wantError: "push refused"},
		{name: "max turns kept", res: schema.BuildResult{Error: "too many turns", Reason: schema.ReasonMaxTurns},
			wantStatus: schema.StatusFailed, wantReason: schema.ReasonMaxTurns, wantError: "too many turns"},
		{name: "no reason", res: schema.BuildResult{Error: "agent crashed"},
			wantStatus: schema.StatusFailed, wantReason: schema.ReasonRunnerError, wantError: "agent crashed"},
		{name: "cluster reason", res: schema.BuildResult{Error: "killed", Reason: schema.ReasonOOM},
			wantStatus: schema.StatusFailed, wantReason: schema.ReasonRunnerError, wantError: "killed"},
		{name: "unknown reason", res: schema.BuildResult{Error: "odd", Reason: "made_up"},
			wantStatus: schema.StatusFailed, wantReason: schema.ReasonRunnerError, wantError: "odd"},
		{name: "no error text", res: schema.BuildResult{Reason: schema.ReasonGit},
			wantStatus: schema.StatusFailed, wantReason: schema.ReasonGit, wantError: "the runner reported failure without an error message"},
	} {
		b := e.running(t, schema.BuildSpec{Prompt: tc.name})
		ack, err := e.lc.Finish(ctx, b.ID, tc.res, "test")
		require.NoError(t, err, tc.name)
		assert.Equal(t, schema.ResultAck{Status: tc.wantStatus, Accepted: true}, ack, tc.name)
		got := e.get(t, b.ID)
		assert.Equal(t, tc.wantStatus, got.Status, tc.name)
		assert.Equal(t, tc.wantReason, got.Reason, tc.name)
		assert.Equal(t, tc.wantError, got.Error, tc.name)
		require.NotNil(t, got.Result, tc.name)
		assert.Equal(t, tc.wantReason, got.Result.Reason, "%s: the stored result carries the recorded reason", tc.name)
		if tc.res.Success {
			assert.Empty(t, got.Result.Error, tc.name)
			assert.Equal(t, "abc", got.Result.CommitSHA, tc.name)
		}
	}
}

// A runner's result may come before the launcher has recorded the start (the
// pod ran fast): it still settles the build.
func TestFinishFromPending(t *testing.T) {
	e := setup(t)
	b := e.accept(t, schema.BuildSpec{Prompt: "x"})
	ack, err := e.lc.Finish(context.Background(), b.ID, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)
	assert.Equal(t, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true}, ack)
}

// A runner that stopped on SIGTERM says cancelled: true; that settles nothing.
func TestFinishCancelledChangesNothing(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.running(t, schema.BuildSpec{Prompt: "x", CallbackURL: "https://example.com/hook"})
	seen := e.transitions()
	ack, err := e.lc.Finish(ctx, b.ID, schema.BuildResult{Cancelled: true, Error: "terminated", Reason: schema.ReasonAgentError}, "test")
	require.NoError(t, err)
	assert.Equal(t, schema.ResultAck{Status: schema.StatusRunning, Accepted: false}, ack)
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusRunning, got.Status)
	assert.Nil(t, got.Result)
	assert.Empty(t, got.Error)
	assert.Equal(t, seen, e.transitions())
	assert.Empty(t, e.riverJobs(t, "kiln_callback"))

	_, err = e.lc.Finish(ctx, newID(t), schema.BuildResult{Cancelled: true}, "test")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestFinishDuplicateIgnored(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.running(t, schema.BuildSpec{Prompt: "x"})
	first := schema.BuildResult{Success: true, CommitSHA: "abc", Output: "done"}
	ack, err := e.lc.Finish(ctx, b.ID, first, "runner protocol")
	require.NoError(t, err)
	require.True(t, ack.Accepted)
	want := e.get(t, b.ID)
	seen := e.transitions()

	for _, res := range []schema.BuildResult{first, {Success: false, Error: "later", Reason: schema.ReasonGit}} {
		ack, err := e.lc.Finish(ctx, b.ID, res, "termination message")
		require.NoError(t, err)
		assert.Equal(t, schema.ResultAck{Status: schema.StatusCompleted, Accepted: false}, ack)
	}
	got := e.get(t, b.ID)
	assert.Equal(t, want.Result, got.Result)
	assert.Equal(t, want.FinishedAt, got.FinishedAt)
	assert.Equal(t, schema.ReasonNone, got.Reason)
	assert.Equal(t, seen, e.transitions())

	_, err = e.lc.Finish(ctx, newID(t), first, "test")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestFinishTruncatesOutput(t *testing.T) {
	e := setup(t, func(o *lifecycle.Options) { o.MaxOutputBytes = 10 })
	ctx := context.Background()

	long := e.running(t, schema.BuildSpec{Prompt: "long"})
	_, err := e.lc.Finish(ctx, long.ID, schema.BuildResult{Success: true, Output: strings.Repeat("x", 100)}, "test")
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("x", 10)+"\n[output truncated]", e.get(t, long.ID).Result.Output)

	fits := e.running(t, schema.BuildSpec{Prompt: "fits"})
	_, err = e.lc.Finish(ctx, fits.ID, schema.BuildResult{Success: true, Output: strings.Repeat("y", 10)}, "test")
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("y", 10), e.get(t, fits.ID).Result.Output)
}

// Text Postgres cannot store (NUL, invalid UTF-8) — as a pod's termination
// message may carry it, unrepaired by the runner protocol — does not keep a
// build from settling: it is stored as U+FFFD, in a result and in a failure.
func TestUnstorableTextSettles(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	bad := "a\x00b\xffc"
	done := e.running(t, schema.BuildSpec{Prompt: "r"})
	ack, err := e.lc.Finish(ctx, done.ID, schema.BuildResult{Success: false, Reason: schema.ReasonAgentError,
		Error: bad, Output: bad, CommitSHA: bad, FilesChanged: []string{bad}}, "termination message")
	require.NoError(t, err)
	require.True(t, ack.Accepted)
	got := e.get(t, done.ID)
	want := "a\uFFFDb\uFFFDc"
	assert.Equal(t, schema.StatusFailed, got.Status)
	assert.Equal(t, want, got.Error)
	assert.Equal(t, want, got.Result.Output)
	assert.Equal(t, []string{want}, got.Result.FilesChanged)

	failed := e.running(t, schema.BuildSpec{Prompt: "f"})
	_, err = e.lc.Fail(ctx, failed.ID, schema.ReasonPodFailed, "runner exited: "+bad)
	require.NoError(t, err)
	assert.Equal(t, "runner exited: "+want, e.get(t, failed.ID).Error)

	cancelled := e.running(t, schema.BuildSpec{Prompt: "c"})
	_, err = e.lc.Cancel(ctx, cancelled.ID, bad)
	require.NoError(t, err)
	assert.Equal(t, want, e.get(t, cancelled.ID).Error)
}

func TestFinishDefaultMaxOutput(t *testing.T) {
	e := setup(t)
	b := e.running(t, schema.BuildSpec{Prompt: "x"})
	_, err := e.lc.Finish(context.Background(), b.ID,
		schema.BuildResult{Success: true, Output: strings.Repeat("z", lifecycle.DefaultMaxOutputBytes+1)}, "test")
	require.NoError(t, err)
	out := e.get(t, b.ID).Result.Output
	assert.Equal(t, strings.Repeat("z", lifecycle.DefaultMaxOutputBytes)+"\n[output truncated]", out)
}

// Invariant 6: a terminal build with a callback_url gets exactly one
// callback job, inserted in the transaction of its status.
func TestCallbackJobInTheTransition(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	hook := schema.BuildSpec{Prompt: "x", CallbackURL: "https://example.com/hook"}

	b := e.running(t, hook)
	assert.Empty(t, e.riverJobs(t, "kiln_callback"), "not while running")
	_, err := e.lc.Fail(ctx, b.ID, schema.ReasonPodFailed, "runner exited with code 1 without a result")
	require.NoError(t, err)
	jobs := e.riverJobs(t, "kiln_callback")
	require.Len(t, jobs, 1)
	assert.Equal(t, b.ID, jobs[0].Args["build_id"])
	_, err = uuid.Parse(jobs[0].Args["delivery_id"])
	assert.NoError(t, err, "the delivery id is fixed at insert")

	// Without a callback_url there is none.
	quiet := e.running(t, schema.BuildSpec{Prompt: "quiet"})
	_, err = e.lc.Finish(ctx, quiet.ID, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)
	assert.Len(t, e.riverJobs(t, "kiln_callback"), 1)

	// A completion and a cancel of a pending build insert theirs too.
	done := e.running(t, hook)
	_, err = e.lc.Finish(ctx, done.ID, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)
	pending := e.accept(t, hook)
	_, err = e.lc.Cancel(ctx, pending.ID, "by test")
	require.NoError(t, err)
	ids := map[string]bool{}
	for _, j := range e.riverJobs(t, "kiln_callback") {
		ids[j.Args["build_id"]] = true
	}
	assert.Equal(t, map[string]bool{b.ID: true, done.ID: true, pending.ID: true}, ids)
}

// When the callback job cannot be inserted, the status does not change
// either; and when the transaction fails after the callback job was
// inserted (cancelling the dispatch job), the callback job goes with it.
func TestCallbackJobRolledBackWithTheTransition(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	hook := schema.BuildSpec{Prompt: "x", CallbackURL: "https://example.com/hook"}
	_, err := e.db.Pool.Exec(ctx, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`)
	require.NoError(t, err)

	// 1. The insert of the callback job fails: the build stays running.
	b := e.running(t, hook)
	seen := e.transitions()
	_, err = e.db.Pool.Exec(ctx, `CREATE TRIGGER refuse_callbacks BEFORE INSERT ON river_job
		FOR EACH ROW WHEN (NEW.kind = 'kiln_callback') EXECUTE FUNCTION refuse()`)
	require.NoError(t, err)
	_, err = e.lc.Fail(ctx, b.ID, schema.ReasonOOM, "out of memory")
	require.Error(t, err)
	_, err = e.lc.Finish(ctx, b.ID, schema.BuildResult{Success: true}, "test")
	require.Error(t, err)
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusRunning, got.Status)
	assert.Equal(t, schema.ReasonNone, got.Reason)
	assert.Empty(t, got.Error)
	assert.Nil(t, got.Result)
	_, err = e.db.Pool.Exec(ctx, `DROP TRIGGER refuse_callbacks ON river_job`)
	require.NoError(t, err)

	// 2. Cancel of a pending build: the callback job is inserted, then
	// cancelling its dispatch job fails; both roll back with the status.
	p := e.accept(t, hook)
	_, err = e.db.Pool.Exec(ctx, `CREATE TRIGGER refuse_updates BEFORE UPDATE ON river_job
		FOR EACH ROW EXECUTE FUNCTION refuse()`)
	require.NoError(t, err)
	_, err = e.lc.Cancel(ctx, p.ID, "by test")
	require.Error(t, err)
	assert.Equal(t, schema.StatusPending, e.get(t, p.ID).Status)
	assert.Empty(t, e.riverJobs(t, "kiln_callback"), "no callback job survives a failed transition")
	assert.Equal(t, append(seen, schema.StatusPending), e.transitions(), "only the accept was reported")
	_, err = e.db.Pool.Exec(ctx, `DROP TRIGGER refuse_updates ON river_job`)
	require.NoError(t, err)

	// With the database willing again, each gets exactly one.
	_, err = e.lc.Cancel(ctx, p.ID, "by test")
	require.NoError(t, err)
	_, err = e.lc.Fail(ctx, b.ID, schema.ReasonOOM, "out of memory")
	require.NoError(t, err)
	assert.Len(t, e.riverJobs(t, "kiln_callback"), 2)
}

func TestCancel(t *testing.T) {
	e := setup(t)
	ctx := context.Background()

	pending := e.accept(t, schema.BuildSpec{Prompt: "x"})
	require.NotZero(t, pending.RiverJobID)
	require.Equal(t, []riverJob{{Kind: "kiln_dispatch", State: "available",
		Args: map[string]string{"build_id": pending.ID, "project_id": e.project}}}, e.riverJobs(t, "kiln_dispatch"))
	got, err := e.lc.Cancel(ctx, pending.ID, "cancelled by alice")
	require.NoError(t, err)
	assert.Equal(t, schema.StatusCancelled, got.Status)
	assert.Equal(t, schema.ReasonCancelled, got.Reason)
	assert.Equal(t, "cancelled by alice", got.Error)
	assert.NotNil(t, got.FinishedAt)
	assert.Equal(t, "cancelled", e.riverJobs(t, "kiln_dispatch")[0].State, "its dispatch job is cancelled with it")

	running := e.running(t, schema.BuildSpec{Prompt: "y"})
	got, err = e.lc.Cancel(ctx, running.ID, "cancelled by bob")
	require.NoError(t, err)
	assert.Equal(t, schema.StatusCancelled, got.Status)
	assert.Equal(t, running.JobName, got.JobName, "the watcher finds its Job by it")

	// A build without a dispatch job (or whose job is gone) cancels too.
	bare := newID(t)
	_, err = store.InsertBuild(ctx, e.db.Pool, store.NewBuild{ID: bare, ProjectID: e.project, Spec: schema.BuildSpec{Prompt: "z"}})
	require.NoError(t, err)
	_, err = e.lc.Cancel(ctx, bare, "by test")
	require.NoError(t, err)
	gone := e.accept(t, schema.BuildSpec{Prompt: "w"})
	_, err = e.db.Pool.Exec(ctx, `DELETE FROM river_job WHERE id = $1`, gone.RiverJobID)
	require.NoError(t, err)
	_, err = e.lc.Cancel(ctx, gone.ID, "by test")
	require.NoError(t, err)
	assert.Equal(t, schema.StatusCancelled, e.get(t, gone.ID).Status)

	_, err = e.lc.Cancel(ctx, newID(t), "by test")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestOnTransitionOncePerCommittedChange(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.accept(t, schema.BuildSpec{Prompt: "x"})
	_, err := e.lc.Start(ctx, b.ID, "j")
	require.NoError(t, err)
	_, err = e.lc.Start(ctx, b.ID, "j")
	require.Error(t, err)
	_, err = e.lc.Fail(ctx, b.ID, schema.ReasonNone, "not a failure")
	require.Error(t, err)
	_, err = e.lc.Finish(ctx, b.ID, schema.BuildResult{Cancelled: true}, "test")
	require.NoError(t, err)
	_, err = e.lc.Finish(ctx, b.ID, schema.BuildResult{Error: "boom", Reason: schema.ReasonAgentError}, "test")
	require.NoError(t, err)
	_, err = e.lc.Finish(ctx, b.ID, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)
	_, err = e.lc.Cancel(ctx, b.ID, "late")
	require.Error(t, err)
	_, err = e.lc.Fail(ctx, b.ID, schema.ReasonOOM, "late")
	require.Error(t, err)
	assert.Equal(t, []schema.Status{schema.StatusPending, schema.StatusRunning, schema.StatusFailed}, e.transitions())
}

func TestOnTransitionMayBeNil(t *testing.T) {
	e := setup(t, func(o *lifecycle.Options) { o.OnTransition = nil })
	b := e.running(t, schema.BuildSpec{Prompt: "x"})
	_, err := e.lc.Cancel(context.Background(), b.ID, "by test")
	require.NoError(t, err)
	e.lc.Committed(nil, b)
	assert.Empty(t, e.transitions())
}

// Invariant 1: a build's audit row and its dispatch job commit together.
func TestAcceptTxIsAtomic(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	nbs := func() []store.NewBuild {
		return []store.NewBuild{
			{ID: newID(t), ProjectID: e.project, Spec: schema.BuildSpec{Prompt: "a"}, RequestedBy: "alice"},
			{ID: newID(t), ProjectID: e.project, Spec: schema.BuildSpec{Prompt: "b", Template: "readonly"}, RequestedBy: "bob"},
		}
	}
	count := func() (builds, jobs int) {
		require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM builds`).Scan(&builds))
		require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&jobs))
		return
	}

	boom := errors.New("injected between the dispatch jobs and the rows")
	err := pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		_, err := e.lc.AcceptTx(ctx, tx, nbs(), func(context.Context) error { return boom })
		return err
	})
	require.ErrorIs(t, err, boom)
	b, j := count()
	assert.Equal(t, [2]int{0, 0}, [2]int{b, j}, "neither the jobs nor the rows")

	// A failure after AcceptTx (the caller's own write) rolls both back too.
	err = pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		if _, err := e.lc.AcceptTx(ctx, tx, nbs(), nil); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	b, j = count()
	assert.Equal(t, [2]int{0, 0}, [2]int{b, j})

	// An unknown project fails the whole batch.
	bad := nbs()
	bad[1].ProjectID = uuid.NewString()
	err = pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		_, err := e.lc.AcceptTx(ctx, tx, bad, nil)
		return err
	})
	require.ErrorIs(t, err, store.ErrNotFound)
	b, j = count()
	assert.Equal(t, [2]int{0, 0}, [2]int{b, j})

	var out []*store.Build
	want := nbs()
	require.NoError(t, pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		var err error
		out, err = e.lc.AcceptTx(ctx, tx, want, nil)
		return err
	}))
	assert.Empty(t, e.transitions(), "AcceptTx reports nothing: its caller commits")
	e.lc.Committed(out...)
	assert.Equal(t, []schema.Status{schema.StatusPending, schema.StatusPending}, e.transitions())

	require.Len(t, out, 2)
	dispatch := e.riverJobs(t, "kiln_dispatch")
	require.Len(t, dispatch, 2)
	for i, nb := range want {
		assert.Equal(t, nb.ID, out[i].ID)
		assert.Equal(t, schema.StatusPending, out[i].Status)
		assert.Equal(t, nb.RequestedBy, out[i].RequestedBy)
		assert.False(t, out[i].CreatedAt.IsZero())
		stored := e.get(t, nb.ID)
		assert.Equal(t, out[i].RiverJobID, stored.RiverJobID, "the row names its dispatch job")
		assert.Equal(t, nb.Spec, stored.Spec)
		assert.Equal(t, out[i].CreatedAt.UnixMicro(), stored.CreatedAt.UnixMicro())
		assert.Equal(t, nb.ID, dispatch[i].Args["build_id"])
	}
	var jobBuild string
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT args->>'build_id' FROM river_job WHERE id = $1`, out[1].RiverJobID).Scan(&jobBuild))
	assert.Equal(t, want[1].ID, jobBuild)

	none, err := e.lc.AcceptTx(ctx, nil, nil, func(context.Context) error { return boom })
	require.NoError(t, err)
	assert.Nil(t, none)
}

func TestRunnerReason(t *testing.T) {
	t.Parallel()
	for in, want := range map[schema.Reason]schema.Reason{
		schema.ReasonAgentError:       schema.ReasonAgentError,
		schema.ReasonMaxTurns:         schema.ReasonMaxTurns,
		schema.ReasonWorkspace:        schema.ReasonWorkspace,
		schema.ReasonGit:              schema.ReasonGit,
		schema.ReasonPushRejected:     schema.ReasonPushRejected,
		schema.ReasonDeadline:         schema.ReasonDeadline,
		schema.ReasonRunnerError:      schema.ReasonRunnerError,
		schema.ReasonAgentAuth:        schema.ReasonAgentAuth,
		schema.ReasonAgentBadRequest:  schema.ReasonAgentBadRequest,
		schema.ReasonAgentUnavailable: schema.ReasonAgentUnavailable,
		schema.ReasonAgentPushed:      schema.ReasonAgentPushed,
		schema.ReasonNone:             schema.ReasonRunnerError,
		schema.ReasonCancelled:        schema.ReasonRunnerError,
		schema.ReasonOOM:              schema.ReasonRunnerError,
		schema.ReasonImagePull:        schema.ReasonRunnerError,
		schema.ReasonUnschedulable:    schema.ReasonRunnerError,
		schema.ReasonJobDeleted:       schema.ReasonRunnerError,
		schema.ReasonInvalidJob:       schema.ReasonRunnerError,
		schema.ReasonQuota:            schema.ReasonRunnerError,
		schema.ReasonOther:            schema.ReasonRunnerError,
		"made_up":                     schema.ReasonRunnerError,
	} {
		assert.Equal(t, want, lifecycle.RunnerReason(in), "%q", in)
	}
	// A runner's too: its budget stopped the agent; a follow-up's session is gone.
	for _, r := range []schema.Reason{schema.ReasonBudgetExceeded, schema.ReasonSessionUnavailable} {
		assert.Equal(t, r, lifecycle.RunnerReason(r), "%q", r)
	}
}

// A stopped runner's account (its output, session, kept work) stays with a
// build that has no result — a running build that the runner reports
// stopped, or one cancelled before the runner's result came — and changes
// neither its status, reason nor error; a build with a result keeps it.
func TestKeepStoppedResult(t *testing.T) {
	var kept []*store.Build
	var mu sync.Mutex
	e := setup(t, func(o *lifecycle.Options) {
		o.OnStoppedResult = func(b *store.Build) { mu.Lock(); kept = append(kept, b); mu.Unlock() }
	})
	ctx := context.Background()
	stopped := func(id string) schema.BuildResult {
		return schema.BuildResult{Cancelled: true, Success: true, Error: "cancelled: the dispatcher reports the build as terminal",
			Output: "half done", SessionID: "0b4f1f9e-6f43-4d8e-9a31-1b1f0b1c2d3e", FilesChanged: []string{"a.go"},
			PartialBranch: schema.KeptWorkBranch(id), PartialCommitSHA: "0123456789abcdef0123456789abcdef01234567",
			PartialPushed: true, Usage: &schema.Usage{CostUSD: 0.25, Turns: 3}}
	}

	// Cancelled first, the runner's result after.
	b := e.running(t, schema.BuildSpec{Prompt: "x"})
	_, err := e.lc.Cancel(ctx, b.ID, "user asked")
	require.NoError(t, err)
	seen := e.transitions()
	ok, err := e.lc.KeepStoppedResult(ctx, b.ID, stopped(b.ID))
	require.NoError(t, err)
	require.True(t, ok)
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusCancelled, got.Status)
	assert.Equal(t, schema.ReasonCancelled, got.Reason)
	assert.Equal(t, "user asked", got.Error)
	require.NotNil(t, got.Result)
	assert.False(t, got.Result.Success, "a kept account never claims success")
	assert.Equal(t, schema.KeptWorkBranch(b.ID), got.Result.PartialBranch)
	assert.Equal(t, "0b4f1f9e-6f43-4d8e-9a31-1b1f0b1c2d3e", got.Result.SessionID)
	assert.Equal(t, seen, e.transitions(), "no status change")
	var cost float64
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT cost_usd FROM builds WHERE id = $1`, b.ID).Scan(&cost))
	assert.Equal(t, 0.25, cost, "its spend counts")
	var msg string
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT payload->>'message' FROM build_events WHERE build_id = $1 AND type = 'info' ORDER BY seq DESC LIMIT 1`, b.ID).Scan(&msg))
	assert.Contains(t, msg, "kept the build's changes on "+schema.KeptWorkBranch(b.ID))

	// A second account does not replace the first.
	second := stopped(b.ID)
	second.Output = "other"
	ok, err = e.lc.KeepStoppedResult(ctx, b.ID, second)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, "half done", e.get(t, b.ID).Result.Output)

	// Reported stopped while running: kept, the build still running until the watcher settles it.
	r := e.running(t, schema.BuildSpec{Prompt: "y"})
	ack, err := e.lc.Finish(ctx, r.ID, stopped(r.ID), "runner")
	require.NoError(t, err)
	assert.Equal(t, schema.ResultAck{Status: schema.StatusRunning, Accepted: false}, ack)
	got = e.get(t, r.ID)
	assert.Equal(t, schema.StatusRunning, got.Status)
	require.NotNil(t, got.Result)
	assert.Equal(t, schema.KeptWorkBranch(r.ID), got.Result.PartialBranch)
	_, err = e.lc.Cancel(ctx, r.ID, "job deleted")
	require.NoError(t, err)
	assert.Equal(t, schema.KeptWorkBranch(r.ID), e.get(t, r.ID).Result.PartialBranch, "the settle keeps it")

	// A build settled by its result keeps that result.
	c := e.running(t, schema.BuildSpec{Prompt: "z"})
	_, err = e.lc.Finish(ctx, c.ID, schema.BuildResult{Success: true, Output: "done"}, "runner")
	require.NoError(t, err)
	ok, err = e.lc.KeepStoppedResult(ctx, c.ID, stopped(c.ID))
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, "done", e.get(t, c.ID).Result.Output)

	_, err = e.lc.KeepStoppedResult(ctx, newID(t), stopped("x"))
	require.ErrorIs(t, err, store.ErrNotFound)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, kept, 2)
	assert.Equal(t, schema.StatusCancelled, kept[0].Status)
	assert.Equal(t, schema.StatusRunning, kept[1].Status)
}
