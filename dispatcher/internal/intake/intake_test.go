package intake

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

func setup(t *testing.T) (*Service, *pgtest.DB, *auth.Principal) {
	t.Parallel()
	db := pgtest.New(t)
	rc, err := queue.NewClient(db.Pool, queue.Options{Schema: db.Schema})
	require.NoError(t, err)
	lc, err := lifecycle.New(lifecycle.Options{Pool: db.Pool, River: rc})
	require.NoError(t, err)
	s := start(t, Options{Store: store.New(db.Pool), Templates: jobtemplates.Embedded(), Lifecycle: lc})
	return s, db, &auth.Principal{TokenID: mustToken(t, db), Name: "admin", Admin: true}
}

// start makes a Service from o and starts it; it is stopped when the test ends.
func start(t *testing.T, o Options) *Service {
	t.Helper()
	s, err := New(o)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)
	return s
}

func mustToken(t *testing.T, db *pgtest.DB) string {
	_, err := auth.Issue(context.Background(), db.Pool, "admin", true, nil)
	require.NoError(t, err)
	var id string
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT id FROM api_tokens`).Scan(&id))
	return id
}

func counts(t *testing.T, db *pgtest.DB) (builds, jobs, events int) {
	ctx := context.Background()
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM builds`).Scan(&builds))
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&jobs))
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM build_events`).Scan(&events))
	return
}

// docs/design.md, invariant 1: no 202 without both writes; no River job
// without an audit row.
func TestSubmitIsAtomic(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)

	// With an Idempotency-Key or without: a failed submission binds no key
	// either, so its retry is a new build, not a replay of one never written.
	boom := errors.New("injected failure between the River insert and the audit row")
	s.testHookAfterJobInsert = func(context.Context) error { return boom }
	for _, key := range []string{"", "k"} {
		_, err = s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, key)
		require.ErrorIs(t, err, boom)
		b, j, e := counts(t, db)
		assert.Equal(t, [3]int{0, 0, 0}, [3]int{b, j, e}, "neither the River job nor the audit row survives (key %q)", key)
		var keys int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&keys))
		assert.Zero(t, keys, "no key bound (key %q)", key)
	}

	// A failure after the audit row (the idempotency claim) rolls back both too.
	s.testHookAfterJobInsert = nil
	_, err = s.CreateAndBuild(ctx, admin, schema.CreateAndBuild{
		Project: schema.ProjectInput{Name: "web"}, Build: schema.BuildSpec{Prompt: "x"}})
	require.ErrorIs(t, err, store.ErrConflict)
	b, j, _ := counts(t, db)
	assert.Equal(t, [2]int{0, 0}, [2]int{b, j})

	// And with the hook gone, both are written; the key's retry is new.
	acc, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "k")
	require.NoError(t, err)
	assert.False(t, acc.Replay)
	b, j, e := counts(t, db)
	assert.Equal(t, [3]int{1, 1, 1}, [3]int{b, j, e})
	got, err := store.GetBuild(ctx, db.Pool, acc.Build.ID)
	require.NoError(t, err)
	assert.Equal(t, acc.Build.RiverJobID, got.RiverJobID, "the audit row points at its River job")
}

func TestCreateAndBuildIsAtomic(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	boom := errors.New("injected")
	s.testHookAfterJobInsert = func(context.Context) error { return boom }
	_, err := s.CreateAndBuild(ctx, admin, schema.CreateAndBuild{
		Project: schema.ProjectInput{Name: "fresh"}, Build: schema.BuildSpec{Prompt: "x"}})
	require.ErrorIs(t, err, boom)
	var projects int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM projects`).Scan(&projects))
	b, j, _ := counts(t, db)
	assert.Equal(t, [3]int{0, 0, 0}, [3]int{projects, b, j}, "project and build: both or neither")
}

func TestTerminalStatusNeverChanges(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	acc, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.NoError(t, err)
	_, err = s.Cancel(ctx, admin, acc.Build.ID, "")
	require.NoError(t, err)
	for _, to := range []schema.Status{schema.StatusRunning, schema.StatusCompleted, schema.StatusFailed} {
		reason := schema.ReasonNone
		if to == schema.StatusFailed {
			reason = schema.ReasonRunnerError
		}
		_, err := store.TransitionBuild(ctx, db.Pool, acc.Build.ID, store.Transition{To: to, Reason: reason,
			Result: &schema.BuildResult{Success: true}})
		require.ErrorIs(t, err, store.ErrTerminal, to)
	}
	b, err := store.GetBuild(ctx, db.Pool, acc.Build.ID)
	require.NoError(t, err)
	assert.Equal(t, schema.StatusCancelled, b.Status)
	assert.Nil(t, b.Result, "a late result is not recorded")
	assert.WithinDuration(t, time.Now(), *b.FinishedAt, time.Minute)
}

// A group commit claims its submissions' Idempotency-Keys first and writes
// builds and River jobs only for the keys it won: a key bound before, or
// twice in the same batch, is a replay that writes nothing.
func TestBatchClaimsKeysBeforeWriting(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	bound, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "earlier"}, "k-bound")
	require.NoError(t, err)

	sub := func(key, prompt string) *submission {
		spec := schema.BuildSpec{Prompt: prompt, Template: "default"}
		var hash []byte
		if key != "" {
			hash = requestHash(p.ID, "", spec)
		}
		return &submission{who: admin, projectID: p.ID, spec: spec, key: key, hash: hash}
	}
	batch := []*submission{sub("k1", "a"), sub("k1", "a"), sub("k-bound", "earlier"), sub("", "b"), sub("k3", "c")}
	builds, err := s.insertMany(ctx, batch)
	require.NoError(t, err)
	require.Len(t, builds, len(batch))
	assert.NotNil(t, builds[0], "first claim of k1 wins")
	assert.Nil(t, builds[1], "second claim of k1 in the same batch is a replay")
	assert.Nil(t, builds[2], "a key bound by an earlier request is a replay")
	assert.NotNil(t, builds[3], "no key: always written")
	assert.NotNil(t, builds[4])
	b, j, e := counts(t, db)
	assert.Equal(t, [3]int{4, 4, 4}, [3]int{b, j, e}, "the earlier build plus three: one row, job and event each")

	// Through SubmitBuild, the replays answer with the winners' builds.
	acc, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "a"}, "k1")
	require.NoError(t, err)
	assert.True(t, acc.Replay)
	assert.Equal(t, builds[0].ID, acc.Build.ID)
	acc, err = s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "earlier"}, "k-bound")
	require.NoError(t, err)
	assert.Equal(t, bound.Build.ID, acc.Build.ID)
	_, err = s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "not c"}, "k3")
	require.ErrorIs(t, err, ErrIdempotencyMismatch)
}
