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
	s := &Service{Store: store.New(db.Pool), River: rc, Templates: jobtemplates.Embedded(), Lifecycle: &lifecycle.Lifecycle{River: rc}}
	return s, db, &auth.Principal{TokenID: mustToken(t, db), Name: "admin", Admin: true}
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

// Invariant 1: no 202 without both writes; no River job without an audit row.
func TestSubmitIsAtomic(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)

	boom := errors.New("injected failure between the River insert and the audit row")
	s.testHookAfterJobInsert = func(context.Context) error { return boom }
	_, err = s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.ErrorIs(t, err, boom)
	b, j, e := counts(t, db)
	assert.Equal(t, [3]int{0, 0, 0}, [3]int{b, j, e}, "neither the River job nor the audit row survives")

	// A failure after the audit row (the idempotency claim) rolls back both too.
	s.testHookAfterJobInsert = nil
	_, err = s.CreateAndBuild(ctx, admin, schema.CreateAndBuild{
		Project: schema.ProjectInput{Name: "web"}, Build: schema.BuildSpec{Prompt: "x"}})
	require.ErrorIs(t, err, store.ErrConflict)
	b, j, _ = counts(t, db)
	assert.Equal(t, [2]int{0, 0}, [2]int{b, j})

	// And with the hook gone, both are written.
	acc, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.NoError(t, err)
	b, j, e = counts(t, db)
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
		_, err := store.TransitionBuild(ctx, db.Pool, acc.Build.ID, store.Transition{To: to,
			Result: &schema.BuildResult{Success: true}})
		require.ErrorIs(t, err, store.ErrTerminal, to)
	}
	b, err := store.GetBuild(ctx, db.Pool, acc.Build.ID)
	require.NoError(t, err)
	assert.Equal(t, schema.StatusCancelled, b.Status)
	assert.Nil(t, b.Result, "a late result is not recorded")
	assert.WithinDuration(t, time.Now(), *b.FinishedAt, time.Minute)
}
