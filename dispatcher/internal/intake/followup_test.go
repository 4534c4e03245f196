package intake

import (
	"context"
	"sync"
	"testing"
	"testing/fstest"
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

// budgetEnv is a Service whose catalog has "capped" ($30 a project a
// month), whose clock is fixed, and which records the follow-ups it accepts.
type budgetEnv struct {
	s     *Service
	db    *pgtest.DB
	admin *auth.Principal
	now   time.Time

	mu        sync.Mutex
	fallbacks []schema.Fallback
}

func budgetSetup(t *testing.T, now time.Time) *budgetEnv {
	t.Parallel()
	db := pgtest.New(t)
	rc, err := queue.NewClient(db.Pool, queue.Options{Schema: db.Schema})
	require.NoError(t, err)
	lc, err := lifecycle.New(lifecycle.Options{Pool: db.Pool, River: rc})
	require.NoError(t, err)
	capped, err := jobtemplates.Load(fstest.MapFS{"capped.yaml": {Data: []byte(`
agent: {allowedTools: [Read]}
limits: {monthlyBudgetUSD: 30}
`)}})
	require.NoError(t, err)
	e := &budgetEnv{db: db, now: now}
	e.s = start(t, Options{Store: store.New(db.Pool), Templates: jobtemplates.Embedded().Merge(capped), Lifecycle: lc,
		Now: func() time.Time { return e.now }, OnFollowup: func(f schema.Fallback) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.fallbacks = append(e.fallbacks, f)
		}})
	e.admin = &auth.Principal{TokenID: mustToken(t, db), Name: "admin", Admin: true}
	return e
}

// finished runs build id to completed with a reported cost, then dates its
// end at finished.
func (e *budgetEnv) finished(t *testing.T, id string, cost float64, finished time.Time, res schema.BuildResult) {
	t.Helper()
	ctx := context.Background()
	_, err := e.s.Lifecycle.Start(ctx, id, "job-"+id)
	require.NoError(t, err)
	res.Usage = &schema.Usage{CostUSD: cost}
	_, err = e.s.Lifecycle.Finish(ctx, id, res, "test")
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `UPDATE builds SET finished_at = $2 WHERE id = $1`, id, finished)
	require.NoError(t, err)
}

func TestSubmitFollowup(t *testing.T) {
	e := budgetSetup(t, time.Now())
	ctx := context.Background()
	p, err := e.s.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	other, err := e.s.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "api"})
	require.NoError(t, err)
	parent, err := e.s.SubmitBuild(ctx, e.admin, p, schema.BuildSpec{Prompt: "first"}, "")
	require.NoError(t, err)

	_, err = e.s.SubmitFollowup(ctx, e.admin, parent.Build.ID, schema.BuildSpec{Prompt: "more"}, "")
	require.ErrorIs(t, err, store.ErrConflict, "a pending parent")
	assert.Contains(t, err.Error(), "is pending: a follow-up continues a finished build")

	e.finished(t, parent.Build.ID, 0.5, time.Now(), schema.BuildResult{Success: true, SessionID: "s-1"})

	outsider := &auth.Principal{TokenID: e.admin.TokenID, Name: "api-bot", Projects: []string{other.ID}}
	_, err = e.s.SubmitFollowup(ctx, outsider, parent.Build.ID, schema.BuildSpec{Prompt: "more"}, "")
	require.ErrorIs(t, err, store.ErrNotFound, "another project's build is not there")
	_, err = e.s.SubmitFollowup(ctx, e.admin, "0190f0f0-0000-7000-8000-000000000000", schema.BuildSpec{Prompt: "more"}, "")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = e.s.SubmitFollowup(ctx, e.admin, parent.Build.ID, schema.BuildSpec{Prompt: "more", Fallback: "stale"}, "")
	assert.Equal(t, `must be "fresh" or absent (got "stale")`, ruleOf(t, err)["fallback"])

	fu, err := e.s.SubmitFollowup(ctx, e.admin, parent.Build.ID, schema.BuildSpec{Prompt: "more", Fallback: schema.FallbackFresh}, "k")
	require.NoError(t, err)
	assert.Equal(t, parent.Build.ID, fu.Build.ParentID)
	got, err := store.GetBuild(ctx, e.db.Pool, fu.Build.ID)
	require.NoError(t, err)
	assert.Equal(t, parent.Build.ID, got.ParentID, "stored")
	assert.Equal(t, p.ID, got.ProjectID, "on the parent's project")
	assert.Equal(t, schema.FallbackFresh, got.Spec.Fallback)
	assert.Equal(t, "default", got.Spec.Template)

	again, err := e.s.SubmitFollowup(ctx, e.admin, parent.Build.ID, schema.BuildSpec{Prompt: "more", Fallback: schema.FallbackFresh}, "k")
	require.NoError(t, err)
	assert.True(t, again.Replay)
	assert.Equal(t, fu.Build.ID, again.Build.ID, "the same key and body: the first follow-up")
	_, err = e.s.SubmitBuild(ctx, e.admin, p, schema.BuildSpec{Prompt: "more", Fallback: schema.FallbackFresh}, "k")
	assert.Equal(t, ruleFallbackBuild, ruleOf(t, err)["fallback"])
	_, err = e.s.SubmitBuild(ctx, e.admin, p, schema.BuildSpec{Prompt: "more"}, "k")
	require.ErrorIs(t, err, ErrIdempotencyMismatch, "a build is another request than a follow-up")

	// A follow-up of the follow-up.
	e.finished(t, fu.Build.ID, 0.25, time.Now(), schema.BuildResult{Success: true})
	fu2, err := e.s.SubmitFollowup(ctx, e.admin, fu.Build.ID, schema.BuildSpec{Prompt: "and more"}, "")
	require.NoError(t, err)
	second, err := e.s.SubmitFollowup(ctx, e.admin, parent.Build.ID, schema.BuildSpec{Prompt: "another"}, "")
	require.NoError(t, err)

	ids, err := store.ListFollowups(ctx, e.db.Pool, parent.Build.ID)
	require.NoError(t, err)
	assert.Equal(t, []string{fu.Build.ID, second.Build.ID}, ids, "oldest first, the follow-up's own not among them")
	ids, err = store.ListFollowups(ctx, e.db.Pool, fu.Build.ID)
	require.NoError(t, err)
	assert.Equal(t, []string{fu2.Build.ID}, ids)

	e.mu.Lock()
	defer e.mu.Unlock()
	assert.Equal(t, []schema.Fallback{schema.FallbackFresh, schema.FallbackNone, schema.FallbackNone}, e.fallbacks,
		"each accepted follow-up once, the replay not")
}

// A review branch may not be the project's own branch; with {task_id} in
// it, it never is.
func TestSubmitRefusesTheProjectBranch(t *testing.T) {
	e := budgetSetup(t, time.Now())
	ctx := context.Background()
	p, err := e.s.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "web", GitBranch: "trunk"})
	require.NoError(t, err)
	_, err = e.s.SubmitBuild(ctx, e.admin, &schema.Project{ID: p.ID}, schema.BuildSpec{Prompt: "x", Branch: "trunk"}, "")
	assert.Equal(t, "must not be the project's branch (trunk): a review branch leaves it untouched", ruleOf(t, err)["branch"])
	_, err = e.s.SubmitBuild(ctx, e.admin, &schema.Project{ID: p.ID}, schema.BuildSpec{Prompt: "x", Branch: "main"}, "")
	require.NoError(t, err, "another branch")
	_, err = e.s.SubmitBuild(ctx, e.admin, &schema.Project{ID: p.ID}, schema.BuildSpec{Prompt: "x", Branch: "trunk-{task_id}"}, "")
	require.NoError(t, err)
}

func TestMonthlyBudget(t *testing.T) {
	now := time.Date(2026, 12, 20, 18, 30, 0, 0, time.UTC)
	e := budgetSetup(t, now)
	ctx := context.Background()
	p, err := e.s.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	capped := schema.BuildSpec{Prompt: "x", Template: "capped"}

	// $29.99 this month (every template's builds count), $50 last month
	// (not counted).
	for _, b := range []struct {
		cost float64
		at   time.Time
	}{
		{20, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{9.99, time.Date(2026, 12, 20, 18, 0, 0, 0, time.UTC)},
		{50, time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC)},
	} {
		acc, err := e.s.SubmitBuild(ctx, e.admin, p, schema.BuildSpec{Prompt: "spend"}, "")
		require.NoError(t, err)
		e.finished(t, acc.Build.ID, b.cost, b.at, schema.BuildResult{Success: true})
	}
	early, err := e.s.SubmitBuild(ctx, e.admin, p, capped, "before")
	require.NoError(t, err, "under the cap")
	e.finished(t, early.Build.ID, 0.01, now, schema.BuildResult{Success: true}) // $30.00: the cap

	_, err = e.s.SubmitBuild(ctx, e.admin, p, capped, "")
	var mb *MonthlyBudgetError
	require.ErrorAs(t, err, &mb)
	assert.Equal(t, "capped", mb.Template)
	assert.Equal(t, 30.0, mb.CapUSD)
	assert.InDelta(t, 30.0, mb.Spend.CostUSD, 1e-9)
	assert.Equal(t, 3, mb.Spend.Builds)
	assert.Equal(t, "2026-12", mb.Spend.Month)
	assert.Equal(t, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).Sub(now), mb.RetryAfter, "until the next month (UTC)")
	for _, want := range []string{"template capped", "$30.00", "2026-12", "limits.monthlyBudgetUSD"} {
		assert.Contains(t, mb.Error(), want)
	}

	again, err := e.s.SubmitBuild(ctx, e.admin, p, capped, "before")
	require.NoError(t, err, "a retry of a build accepted before the cap was reached")
	assert.Equal(t, early.Build.ID, again.Build.ID)
	assert.True(t, again.Replay)

	_, err = e.s.SubmitBuild(ctx, e.admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.NoError(t, err, "a template without a cap")
	_, err = e.s.SubmitFollowup(ctx, e.admin, early.Build.ID, capped, "")
	require.ErrorAs(t, err, &mb, "a follow-up pays the budget too")

	other, err := e.s.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "api"})
	require.NoError(t, err)
	_, err = e.s.SubmitBuild(ctx, e.admin, other, capped, "")
	require.NoError(t, err, "another project's spend is its own")

	e.now = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = e.s.SubmitBuild(ctx, e.admin, p, capped, "")
	require.NoError(t, err, "a new month")
}
