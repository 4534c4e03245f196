package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/cli"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

type env struct {
	*apptest.Env
	t       *testing.T
	project string // web's id
	token   string // a token for web
}

func setup(t *testing.T, opts ...func(*app.Options)) *env {
	t.Helper()
	t.Parallel()
	o := app.Options{EventHeartbeat: 100 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	a := apptest.New(t, o)
	p := a.Project("web", func(p *schema.Project) { p.CallbackSecret = "kcs_x" })
	return &env{Env: a, t: t, project: p.ID, token: a.Token("bot", p.ID)}
}

// run runs `dispatcher client args...` with KILN_URL and KILN_TOKEN set.
func (e *env) run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	env := map[string]string{"KILN_URL": e.Server.URL, "KILN_TOKEN": e.token}
	code = cli.ClientMain(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	assert.NotContains(e.t, out.String()+errb.String(), e.token, "the token is never printed")
	return code, out.String(), errb.String()
}

func TestSubmitGetListCancelWatch(t *testing.T) {
	e := setup(t)
	code, out, errs := e.run("submit", "--project", "web", "--var", "who=Acme", "--auto-commit",
		"--idempotency-key", "k1", "make", "it", "say", "{{who}}")
	require.Equal(t, 0, code, errs)
	id := strings.TrimSpace(out)
	require.Regexp(t, `^[0-9a-f-]{36}$`, id)

	code, again, _ := e.run("submit", "--project", "web", "--var", "who=Acme", "--auto-commit",
		"--idempotency-key", "k1", "make it say {{who}}")
	require.Equal(t, 0, code)
	assert.Equal(t, id, strings.TrimSpace(again), "same Idempotency-Key, same build")

	code, out, _ = e.run("get", id)
	require.Equal(t, 0, code)
	assert.Contains(t, out, `"status": "pending"`)
	assert.Contains(t, out, `"who": "Acme"`)
	assert.Contains(t, out, `"auto_commit": true`)

	code, out, _ = e.run("list", "--project", "web", "--status", "pending", "--limit", "5")
	require.Equal(t, 0, code)
	assert.Regexp(t, regexp.MustCompile(id+`\s+pending\s+\S+ \S+\s+default\s+\S+`), out)
	assert.NotContains(t, out, "make it say", "a list shows summaries, not prompts")

	code, out, _ = e.run("cancel", id, "--reason", "changed my mind")
	require.Equal(t, 0, code)
	assert.Equal(t, id+" cancelled\n", out)

	code, out, _ = e.run("watch", id)
	assert.Equal(t, cli.ExitCancelled, code)
	assert.Regexp(t, `#1 +status +pending`, out)
	assert.Regexp(t, `#2 +status +cancelled: changed my mind`, out)
	assert.Contains(t, out, "build "+id+" cancelled: changed my mind")

	code, _, errs = e.run("get", uuid.NewString())
	assert.Equal(t, cli.ExitError, code)
	assert.Contains(t, errs, "HTTP 404")
	code, _, _ = e.run("submit", "--project", "web")
	assert.Equal(t, cli.ExitUsage, code)
	code, _, _ = e.run("frobnicate")
	assert.Equal(t, cli.ExitUsage, code)
	code, _, _ = e.run("watch")
	assert.Equal(t, cli.ExitUsage, code)
}

// watch's exit status is the build's outcome, over SSE and the WebSocket.
func TestWatchExitStatus(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct {
		ws   bool
		to   schema.Status
		code int
	}{{false, schema.StatusCompleted, cli.ExitOK}, {true, schema.StatusFailed, cli.ExitFailed}, {false, schema.StatusFailed, cli.ExitFailed},
		{true, schema.StatusCompleted, cli.ExitOK}, {true, schema.StatusCancelled, cli.ExitCancelled}} {
		t.Run(fmt.Sprintf("ws=%v/%s", tc.ws, tc.to), func(t *testing.T) {
			id := e.Pending(e.project, schema.BuildSpec{Prompt: "p"})
			_, err := store.TransitionBuild(context.Background(), e.DB.Pool, id, store.Transition{To: tc.to, Reason: apptest.ReasonFor(tc.to)})
			require.NoError(t, err)
			args := []string{"watch", id, "--quiet"}
			if tc.ws {
				args = append(args, "--ws")
			}
			code, out, errs := e.run(args...)
			assert.Equal(t, tc.code, code, errs)
			assert.Equal(t, "build "+id+" "+string(tc.to)+"\n", out)
		})
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	env := map[string]string{"KILN_URL": "http://127.0.0.1:1", "KILN_TOKEN": "kiln_secret_value"}
	code := cli.ClientMain(context.Background(), []string{"get", uuid.NewString()}, &out, &errb, func(k string) string { return env[k] })
	assert.Equal(t, cli.ExitError, code)
	assert.NotContains(t, out.String()+errb.String(), "kiln_secret_value")
	code = cli.ClientMain(context.Background(), []string{"get", "x"}, &out, &errb, func(string) string { return "" })
	assert.Equal(t, cli.ExitUsage, code, "no token")
}

type envMap map[string]string

func (m envMap) get(k string) string { return m[k] }

// submit's limit and branch flags go into the spec; bad values are refused
// before anything is sent, naming the flag and the rule.
func TestSubmitLimitsAndBranch(t *testing.T) {
	e := setup(t)
	code, out, errs := e.run("submit", "--project", "web", "--budget", "2.5", "--turns", "12", "--branch", "review/{task_id}", "fix it")
	require.Equal(t, 0, code, errs)
	b := e.Get(strings.TrimSpace(out))
	require.NotNil(t, b.Spec.MaxBudgetUSD)
	assert.Equal(t, 2.5, *b.Spec.MaxBudgetUSD)
	require.NotNil(t, b.Spec.MaxTurns)
	assert.Equal(t, 12, *b.Spec.MaxTurns)
	assert.Equal(t, "review/{task_id}", b.Spec.Branch)

	count := func() int {
		var n int
		require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM builds`).Scan(&n))
		return n
	}
	builds := count()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--project", "web", "--budget", "0"}, `--budget "0": must be a positive number of US dollars`},
		{[]string{"--project", "web", "--budget", "-1"}, `--budget "-1": must be a positive number`},
		{[]string{"--project", "web", "--budget", "five"}, `--budget "five": must be a positive number`},
		{[]string{"--project", "web", "--budget", "Inf"}, `--budget "Inf": must be a positive number`},
		{[]string{"--project", "web", "--turns", "0"}, `--turns "0": must be a whole number of at least 1`},
		{[]string{"--project", "web", "--turns", "2.5"}, `--turns "2.5": must be a whole number`},
		{[]string{"--project", "web", "--fallback", "fresh"}, "--fallback: only with --followup"},
		{[]string{"--followup", uuid.NewString(), "--fallback", "stale"}, `--fallback "stale": must be "fresh"`},
		{[]string{"--project", "web", "--followup", uuid.NewString()}, "give --project (a new build) or --followup"},
		{[]string{}, "--project (or --followup) and a prompt are required"},
	} {
		code, _, errs := e.run(append(append([]string{"submit"}, tc.args...), "p")...)
		assert.Equal(t, cli.ExitUsage, code, tc.args)
		assert.Contains(t, errs, tc.want, tc.args)
	}
	assert.Equal(t, builds, count(), "nothing was submitted")
}

// submit --followup starts a follow-up of a finished build on the real API:
// the new build names its parent, carries the flags' fallback, budget and
// turns, and the parent lists it; a follow-up of an unknown build is the
// API's 404.
func TestSubmitFollowup(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	parent := e.Pending(e.project, schema.BuildSpec{Prompt: "add a pricing page"})
	_, err := store.TransitionBuild(ctx, e.DB.Pool, parent, store.Transition{To: schema.StatusCompleted,
		Result: &schema.BuildResult{Success: true, SessionID: "s-1", Output: "added"}})
	require.NoError(t, err)

	code, out, errs := e.run("submit", "--followup", parent, "--fallback", "fresh", "--budget", "1", "--turns", "5",
		"--auto-commit", "now", "link", "it")
	require.Equal(t, cli.ExitOK, code, errs)
	child := e.Get(strings.TrimSpace(out))
	assert.Equal(t, parent, child.ParentID)
	assert.Equal(t, e.project, child.ProjectID)
	assert.Equal(t, "now link it", child.Spec.Prompt)
	assert.Equal(t, schema.FallbackFresh, child.Spec.Fallback)
	require.NotNil(t, child.Spec.MaxBudgetUSD)
	assert.Equal(t, 1.0, *child.Spec.MaxBudgetUSD)
	require.NotNil(t, child.Spec.MaxTurns)
	assert.Equal(t, 5, *child.Spec.MaxTurns)
	assert.True(t, child.Spec.AutoCommit)
	assert.Equal(t, []string{child.ID}, e.Get(parent).Followups)

	code, _, errs = e.run("submit", "--followup", uuid.NewString(), "x")
	assert.Equal(t, cli.ExitError, code)
	assert.Contains(t, errs, "HTTP 404")
}

// watch tells each change of a pending build's waiting reason, and at the
// end where the build's work is: its review branch, its kept work and its
// agent session.
func TestWatchWaitingAndResult(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	id := e.Pending(e.project, schema.BuildSpec{Prompt: "p"})
	for _, p := range []schema.InfoPayload{
		{Message: "waiting for capacity: an older build of this project goes first", WaitingReason: schema.WaitingProjectBusy, QueuePosition: 2},
		{Message: "waiting for capacity: the dispatcher's maximum of builds in flight is reached", WaitingReason: schema.WaitingCapacity, QueuePosition: 1},
	} {
		_, err := store.AppendEvent(ctx, e.DB.Pool, id, schema.EventInfo, p)
		require.NoError(t, err)
	}
	_, err := store.TransitionBuild(ctx, e.DB.Pool, id, store.Transition{To: schema.StatusFailed, Reason: schema.ReasonMaxTurns,
		Error: "the agent reached its maximum of turns", Result: &schema.BuildResult{Reason: schema.ReasonMaxTurns,
			Branch: "review/" + id, PartialBranch: schema.KeptWorkBranch(id), PartialCommitSHA: "0123456789abcdef0123456789abcdef01234567",
			PartialPushed: true, SessionID: "3f2c9a7e-session"}})
	require.NoError(t, err)

	code, out, errs := e.run("watch", id)
	assert.Equal(t, cli.ExitFailed, code, errs)
	assert.Regexp(t, `#2 +info +waiting: project_busy, 2nd in the project's queue\n`, out)
	assert.Regexp(t, `#3 +info +waiting: capacity, 1st in the project's queue\n`, out)
	assert.Contains(t, out, "build "+id+" failed: the agent reached its maximum of turns\n"+
		"branch: review/"+id+"\n"+
		"kept work: kiln/"+id+" (commit 0123456789abcdef0123456789abcdef01234567, pushed)\n"+
		"session: 3f2c9a7e-session")

	code, out, _ = e.run("watch", id, "--quiet")
	assert.Equal(t, cli.ExitFailed, code)
	assert.NotContains(t, out, "waiting:", "quiet: only the outcome")
	assert.Contains(t, out, "kept work: kiln/"+id)
}

// list --status pending shows the project's queue, next build first, with
// each build's place and why it waits; its cursor pages on in that order.
func TestListPendingQueue(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	var ids []string
	for range 3 {
		ids = append(ids, e.Pending(e.project, schema.BuildSpec{Prompt: "p"}))
	}
	_, _, err := store.SetWaiting(ctx, e.DB.Pool, ids[1], schema.WaitingProjectBusy)
	require.NoError(t, err)

	code, out, errs := e.run("list", "--project", "web", "--status", "pending", "--limit", "2")
	require.Equal(t, 0, code, errs)
	assert.Regexp(t, regexp.MustCompile(`(?s)`+ids[0]+`\s+pending.*\s1st\n.*`+ids[1]+`\s+pending.*\s2nd, project_busy\n`), out)
	assert.NotContains(t, out, ids[2])
	m := regexp.MustCompile(`more: --cursor (\S+)`).FindStringSubmatch(errs)
	require.Len(t, m, 2, errs)
	code, out, errs = e.run("list", "--project", "web", "--status", "pending", "--cursor", m[1])
	require.Equal(t, 0, code, errs)
	assert.Regexp(t, ids[2]+`\s+pending.*\s3rd\n`, out)
	assert.NotContains(t, out, ids[0])

	code, out, _ = e.run("list", "--project", "web")
	require.Equal(t, 0, code)
	assert.Less(t, strings.Index(out, ids[2]), strings.Index(out, ids[0]), "without a status: newest first")
	code, _, errs = e.run("list", "--project", "web", "--status", "failed", "--cursor", m[1])
	assert.Equal(t, cli.ExitError, code, "a queue-order cursor is not one of a newest-first listing")
	assert.Contains(t, errs, "cursor: is not a cursor this API returned for this status filter")
}

// With a public URL configured, submit tells the build's console page on
// stderr (stdout stays the bare task id) and watch ends with it.
func TestConsoleURL(t *testing.T) {
	e := setup(t, func(o *app.Options) { o.PublicURL = "https://kiln.example.com" })
	code, out, errs := e.run("submit", "--project", "web", "fix it")
	require.Equal(t, 0, code, errs)
	id := strings.TrimSpace(out)
	require.Regexp(t, `^[0-9a-f-]{36}$`, id, "stdout is the task id alone")
	assert.Equal(t, "console: https://kiln.example.com/ui/builds/"+id+"\n", errs)

	_, err := store.TransitionBuild(context.Background(), e.DB.Pool, id, store.Transition{To: schema.StatusCompleted,
		Result: &schema.BuildResult{Success: true, Branch: "review/" + id}})
	require.NoError(t, err)
	code, out, errs = e.run("watch", id, "--quiet")
	require.Equal(t, cli.ExitOK, code, errs)
	assert.Equal(t, "build "+id+" completed\nbranch: review/"+id+"\nconsole: https://kiln.example.com/ui/builds/"+id+"\n", out)

	code, out, errs = e.run("submit", "--followup", id, "now the tests")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, "console: https://kiln.example.com/ui/builds/"+strings.TrimSpace(out)+"\n", errs, "a follow-up's too")
}

func TestNoConsoleURLWithoutPublicURL(t *testing.T) {
	plain := setup(t)
	code, out, errs := plain.run("submit", "--project", "web", "fix it")
	require.Equal(t, 0, code, errs)
	assert.Empty(t, errs, "no public URL: no console line")
	id := strings.TrimSpace(out)
	_, err := store.TransitionBuild(context.Background(), plain.DB.Pool, id, store.Transition{To: schema.StatusCompleted,
		Result: &schema.BuildResult{Success: true}})
	require.NoError(t, err)
	code, out, _ = plain.run("watch", id, "--quiet")
	require.Equal(t, cli.ExitOK, code)
	assert.Equal(t, "build "+id+" completed\n", out)
}
