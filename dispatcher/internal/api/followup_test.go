package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// finish runs build id to its end (as a launch and the runner would) with res.
func (e *env) finish(id string, res schema.BuildResult) {
	e.t.Helper()
	ctx := context.Background()
	_, err := e.app.Lifecycle.Start(ctx, id, "job-"+id[:8])
	require.NoError(e.t, err)
	ack, err := e.app.Lifecycle.Finish(ctx, id, res, "test")
	require.NoError(e.t, err)
	require.True(e.t, ack.Accepted)
}

func (e *env) accepted(r *resp) string {
	e.t.Helper()
	require.Equal(e.t, http.StatusAccepted, r.Status, "%s", r.Body)
	var acc schema.BuildAccepted
	r.decode(e.t, &acc)
	assert.Equal(e.t, "/builds/"+acc.TaskID, r.Header.Get("Location"))
	if r.Header.Get("Idempotent-Replayed") == "" {
		assert.Equal(e.t, schema.StatusPending, acc.Status)
	}
	return acc.TaskID
}

func (e *env) build(token, id string) schema.Build {
	e.t.Helper()
	r := e.do("GET", "/builds/"+id, token, nil)
	require.Equal(e.t, http.StatusOK, r.Status, "%s", r.Body)
	var b schema.Build
	r.decode(e.t, &b)
	return b
}

func TestFollowups(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	other := e.project("api")
	bot := e.token("web-bot", p.ID)
	outsider := e.token("api-bot", other.ID)
	parent := e.accepted(e.submit(p.ID, bot, map[string]any{"prompt": "add a pricing page"}))

	r := e.do("POST", "/builds/"+parent+"/followups", bot, map[string]any{"prompt": "link it"})
	require.Equal(t, http.StatusConflict, r.Status, "a pending parent")
	assert.Contains(t, r.problem(t)["detail"], "is pending: a follow-up continues a finished build")

	e.finish(parent, schema.BuildResult{Success: true, SessionID: "s-1", Output: "added"})

	// Another project's build answers as GET /builds/{id} does: 404.
	r = e.do("POST", "/builds/"+parent+"/followups", outsider, map[string]any{"prompt": "link it"})
	assert.Equal(t, http.StatusNotFound, r.Status)
	assert.Equal(t, r.Status, e.do("GET", "/builds/"+parent, outsider, nil).Status)
	r = e.do("POST", "/builds/0190f0f0-0000-7000-8000-000000000000/followups", bot, map[string]any{"prompt": "x"})
	assert.Equal(t, http.StatusNotFound, r.Status)
	r = e.do("POST", "/builds/NOT-AN-ID/followups", bot, map[string]any{"prompt": "x"})
	assert.Equal(t, http.StatusNotFound, r.Status)

	for _, c := range []struct {
		name   string
		body   map[string]any
		detail string
	}{
		{"no prompt", map[string]any{"auto_commit": true}, "prompt: required"},
		{"turns over the cap", map[string]any{"prompt": "x", "max_turns": 201},
			"max_turns: must be at most 200, template default's limits.maxTurns (got 201)"},
		{"budget over the cap", map[string]any{"prompt": "x", "max_budget_usd": 26},
			"max_budget_usd: must be at most 25, template default's limits.maxBudgetUSD (got 26)"},
		{"kept-work branch", map[string]any{"prompt": "x", "branch": "kiln/{task_id}"}, "branch: must not start with kiln/"},
		{"project's branch", map[string]any{"prompt": "x", "branch": "main"}, "branch: must not be the project's branch (main)"},
		{"bad branch", map[string]any{"prompt": "x", "branch": "a..b"}, "branch: must be a valid git branch name"},
	} {
		r := e.do("POST", "/builds/"+parent+"/followups", bot, c.body)
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s: %s", c.name, r.Body)
		assert.Contains(t, r.problem(t)["detail"], c.detail, c.name)
	}

	key := header("Idempotency-Key", "fu-1")
	fu := e.accepted(e.do("POST", "/builds/"+parent+"/followups", bot,
		map[string]any{"prompt": "link it", "fallback": "fresh", "branch": "review/{task_id}"}, key))
	r = e.do("POST", "/builds/"+parent+"/followups", bot,
		map[string]any{"prompt": "link it", "fallback": "fresh", "branch": "review/{task_id}"}, key)
	assert.Equal(t, fu, e.accepted(r), "a retry with the same key and body: the same follow-up")
	assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))
	r = e.do("POST", "/builds/"+parent+"/followups", bot, map[string]any{"prompt": "something else"}, key)
	assert.Equal(t, http.StatusUnprocessableEntity, r.Status, "the same key, another body")

	got := e.build(bot, fu)
	assert.Equal(t, parent, got.ParentID)
	assert.Equal(t, p.ID, got.ProjectID)
	assert.Equal(t, schema.FallbackFresh, got.Spec.Fallback)
	assert.Equal(t, "review/{task_id}", got.Spec.Branch)
	assert.Empty(t, got.Followups)

	e.finish(fu, schema.BuildResult{Reason: schema.ReasonMaxTurns, Error: "out of turns", PartialBranch: schema.KeptWorkBranch(fu)})
	fu2 := e.accepted(e.do("POST", "/builds/"+fu+"/followups", bot, map[string]any{"prompt": "finish it"}))
	second := e.accepted(e.do("POST", "/builds/"+parent+"/followups", bot, map[string]any{"prompt": "and a test"}))

	assert.Equal(t, []string{fu, second}, e.build(bot, parent).Followups, "oldest first")
	assert.Equal(t, []string{fu2}, e.build(bot, fu).Followups)
	assert.Equal(t, fu, e.build(bot, fu2).ParentID, "a follow-up of a follow-up")
	assert.Empty(t, e.build(bot, parent).ParentID)
	assert.Equal(t, 1, e.count(`SELECT count(*) FROM river_job WHERE kind = 'kiln_dispatch' AND args->>'build_id' = $1`, fu2),
		"accepted as any build: its River job exists")
}

// fallback is for follow-ups only: every other submission path refuses it.
func TestFallbackOnlyForFollowups(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	const rule = "only for follow-ups (POST /builds/{taskId}/followups)"
	spec := map[string]any{"prompt": "x", "fallback": "fresh"}
	for path, body := range map[string]any{
		"/projects/" + p.ID + "/builds": spec,
		"/project/web/build":            spec,
		"/project/create-and-build":     map[string]any{"project": map[string]any{"name": "fresh"}, "build": spec},
	} {
		r := e.do("POST", path, e.admin, body)
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s: %s", path, r.Body)
		prob := r.problem(t)
		assert.Contains(t, prob["detail"], "fallback: "+rule, path)
	}
	r := e.do("POST", "/project/create-and-build", e.admin, map[string]any{"project": map[string]any{"name": "fresh", "git_branch": "trunk"},
		"build": map[string]any{"prompt": "x", "branch": "trunk"}})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s", r.Body)
	assert.Contains(t, r.problem(t)["detail"], "build.branch: must not be the project's branch (trunk)")
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM builds`), "nothing written")
	assert.Equal(t, 1, e.count(`SELECT count(*) FROM projects`), "create-and-build made no project")
}

// setupCapped is setup with a template "capped" whose builds a project may
// spend at most $1 a month on.
func setupCapped(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	capped, err := jobtemplates.Load(fstest.MapFS{"capped.yaml": {Data: []byte(`
agent: {allowedTools: [Read]}
limits: {monthlyBudgetUSD: 1}
`)}})
	require.NoError(t, err)
	logs := &syncBuffer{}
	a := apptest.New(t, app.Options{Workers: 2, Logger: slog.New(slog.NewJSONHandler(logs, nil)), AuthCacheTTL: time.Second,
		Templates: jobtemplates.Embedded().Merge(capped)})
	return &env{t: t, db: a.DB, app: a.App, srv: a.Server, admin: a.Admin, logs: logs, env: a}
}

func TestMonthlyBudgetRefuses(t *testing.T) {
	e := setupCapped(t)
	p := e.project("web")
	bot := e.token("web-bot", p.ID)
	month := time.Now().UTC().Format("2006-01")

	r := e.do("GET", "/projects/"+p.ID, bot, nil)
	require.Equal(t, http.StatusOK, r.Status)
	var got schema.Project
	r.decode(t, &got)
	assert.Equal(t, &schema.ProjectSpend{Month: month}, got.Spend, "nothing spent yet")

	key := header("Idempotency-Key", "k-early")
	early := e.accepted(e.submit(p.ID, bot, map[string]any{"prompt": "x", "template": "capped"}, key))
	e.finish(early, schema.BuildResult{Success: true, Usage: &schema.Usage{CostUSD: 0.75}})
	cheap := e.accepted(e.submit(p.ID, bot, map[string]any{"prompt": "x"}))
	e.finish(cheap, schema.BuildResult{Success: true, Usage: &schema.Usage{CostUSD: 0.25}})

	r = e.do("GET", "/projects/"+p.ID, bot, nil)
	r.decode(t, &got)
	assert.Equal(t, &schema.ProjectSpend{Month: month, CostUSD: 1, Builds: 2}, got.Spend, "every template's builds")

	next := time.Date(time.Now().UTC().Year(), time.Now().UTC().Month()+1, 1, 0, 0, 0, 0, time.UTC)
	for path, body := range map[string]map[string]any{
		"/projects/" + p.ID + "/builds":   {"prompt": "x", "template": "capped"},
		"/project/web/build":              {"prompt": "x", "template": "capped"},
		"/builds/" + early + "/followups": {"prompt": "x", "template": "capped"},
	} {
		before := time.Until(next)
		r := e.do("POST", path, bot, body) // checked against openapi
		after := time.Until(next)
		require.Equal(t, http.StatusTooManyRequests, r.Status, "%s: %s", path, r.Body)
		prob := r.problem(t)
		assert.Equal(t, "https://kiln.dev/problems/monthly-budget", prob["type"], path)
		for _, want := range []string{"template capped", "$1.00", "spent $1.00", month} {
			assert.Contains(t, prob["detail"], want, path)
		}
		ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
		require.NoError(t, err, "Retry-After: %q", r.Header.Get("Retry-After"))
		assert.GreaterOrEqual(t, ra, int(after.Seconds()), "%s: until the next month (UTC)", path)
		assert.LessOrEqual(t, ra, int(before.Seconds())+1, path)
	}

	r = e.submit(p.ID, bot, map[string]any{"prompt": "x", "template": "capped"}, key)
	assert.Equal(t, early, e.accepted(r), "a retry of a build accepted before the cap was reached")
	e.accepted(e.submit(p.ID, bot, map[string]any{"prompt": "x"})) // no cap on default
	assert.Equal(t, 3, e.count(`SELECT count(*) FROM builds`), "no refused build was written")
}
