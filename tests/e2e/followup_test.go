package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/messagesapi"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

// fuEnv is one managed project whose builds run the real jobrunner and the
// pinned Claude Code CLI against the stand-in Messages API, pushing to a
// token-checking git server; the follow-up tests share it.
type fuEnv struct {
	*wsEnv
	d     *dispatcher
	p     schema.Project
	fetch string // a bare repository the test fetches the remote's branches into

	// model is the stand-in Messages API the CLI reaches (through a fixed
	// URL in the workspace's environment); each subtest gets a fresh one,
	// so a script one subtest left unused cannot answer another's agent.
	mu    sync.Mutex
	model *messagesapi.Server
}

// serveModel forwards a request to the current stand-in.
func (f *fuEnv) serveModel(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	m := f.model
	f.mu.Unlock()
	m.ServeHTTP(w, r)
}

// freshModel gives the agent a new stand-in.
func (f *fuEnv) freshModel() {
	m := messagesapi.New()
	f.mu.Lock()
	f.model = m
	f.mu.Unlock()
}

// cappedMonthlyUSD is the monthly cap of the "capped" template: less than
// the budget stop's spend (messagesapi.BigUsage: $0.12), more than every
// build before it together.
const cappedMonthlyUSD = 0.1

func newFollowupEnv(t *testing.T) *fuEnv {
	t.Helper()
	e := newWorkspaceEnv(t, false, "KILN_RUNNER_IMAGE="+harness.ImageRunner)
	require.NoError(t, writeTemplateVariant(e.env, "capped", "  monthlyBudgetUSD: 0", fmt.Sprintf("  monthlyBudgetUSD: %v", cappedMonthlyUSD)))
	f := &fuEnv{wsEnv: e, d: e.start(), fetch: t.TempDir()}
	f.freshModel()
	front := httptest.NewServer(http.HandlerFunc(f.serveModel))
	t.Cleanup(front.Close)
	in := e.managedInput(projectName("wsfu"), e.token)
	in.AuthorName, in.AuthorEmail = "Kiln Bot", "bot@kiln.example"
	in.Workspace.Env["PATH"] = runnerBins.AgentDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	in.Workspace.Env["GIT_CONFIG_NOSYSTEM"] = "1"
	for _, kv := range messagesapi.CLIEnv(front.URL, "") {
		if k, v, _ := strings.Cut(kv, "="); k != "HOME" {
			in.Workspace.Env[k] = v
		}
	}
	p0, _ := e.postManaged(f.d, in)
	f.p, _ = e.waitProject(f.d, p0.ID, 3*time.Minute, schema.ProjectReady)
	out, err := f.remoteGit(t, "init", "--quiet", "--bare", ".")
	require.NoError(t, err, "git init: %s", out)
	return f
}

// followup posts POST /builds/{parent}/followups and returns the status and body.
func (f *fuEnv) followup(parent string, spec schema.BuildSpec) (int, []byte) {
	f.t.Helper()
	return f.call(f.d, http.MethodPost, "/builds/"+parent+"/followups", spec)
}

// mustFollowup is followup wanting 202; it returns the new build's id.
func (f *fuEnv) mustFollowup(parent string, spec schema.BuildSpec) string {
	f.t.Helper()
	code, body := f.followup(parent, spec)
	require.Equal(f.t, http.StatusAccepted, code, "POST /builds/%s/followups: %s", parent, body)
	var acc schema.BuildAccepted
	require.NoError(f.t, json.Unmarshal(body, &acc))
	require.NotEmpty(f.t, acc.TaskID)
	assert.Equal(f.t, schema.StatusPending, acc.Status)
	return acc.TaskID
}

// refused submits spec to the project expecting a refusal: a build it
// makes anyway is cancelled, so that it takes no script from the stand-in.
func (f *fuEnv) refused(spec schema.BuildSpec) (int, []byte) {
	f.t.Helper()
	code, body := f.call(f.d, http.MethodPost, "/projects/"+f.p.ID+"/builds", spec)
	if code == http.StatusAccepted {
		var acc schema.BuildAccepted
		require.NoError(f.t, json.Unmarshal(body, &acc))
		f.cancel(f.d, acc.TaskID, "a submission expected to be refused")
	}
	return code, body
}

// build submits spec and waits for the build to end.
func (f *fuEnv) build(spec schema.BuildSpec) schema.Build {
	f.t.Helper()
	return f.wait(f.submit(f.d, f.p.ID, spec))
}

func (f *fuEnv) wait(id string) schema.Build {
	f.t.Helper()
	return f.waitStatus(f.d, id, 3*time.Minute, schema.StatusCompleted, schema.StatusFailed, schema.StatusCancelled)
}

func completed(t *testing.T, b schema.Build) {
	t.Helper()
	require.Equal(t, schema.StatusCompleted, b.Status, "build %s: %s (%s)", b.ID, b.Error, b.Reason)
	require.NotNil(t, b.Result)
}

// remoteGit runs git in f.fetch, authenticated to the git server by
// configuration in the environment (not argv).
func (f *fuEnv) remoteGit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = f.fetch
	basic := base64.StdEncoding.EncodeToString([]byte("kiln-bot:" + f.token))
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+filepath.Dir(f.fetch), "GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic "+basic)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// remoteBranches are the remote's branches and their commits.
func (f *fuEnv) remoteBranches(t *testing.T) map[string]string {
	t.Helper()
	out, err := f.remoteGit(t, "ls-remote", "--heads", f.url)
	require.NoError(t, err, "git ls-remote: %s", out)
	heads := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if sha, ref, ok := strings.Cut(l, "\t"); ok {
			heads[strings.TrimPrefix(ref, "refs/heads/")] = sha
		}
	}
	return heads
}

// remoteFile is path's content on the remote's branch; ok is false when
// the branch does not hold it.
func (f *fuEnv) remoteFile(t *testing.T, branch, path string) (content string, ok bool) {
	t.Helper()
	out, err := f.remoteGit(t, "fetch", "--quiet", "--force", f.url, "+refs/heads/"+branch+":refs/fetched/"+branch)
	require.NoError(t, err, "fetching %s: %s", branch, out)
	out, err = f.remoteGit(t, "show", "refs/fetched/"+branch+":"+path)
	return out, err == nil
}

// turns are the stand-in's agent-turn requests of session sid (all
// sessions when sid is empty) that arrived after since.
func (f *fuEnv) turns(sid string, since time.Time) []messagesapi.Request {
	var out []messagesapi.Request
	f.mu.Lock()
	m := f.model
	f.mu.Unlock()
	for _, r := range m.Requests() {
		if r.Kind == "turn" && !r.Time.Before(since) && (sid == "" || r.SessionID == sid) {
			out = append(out, r)
		}
	}
	return out
}

// agentEventTypes are the events that come from the agent's run.
var agentEventTypes = []schema.EventType{schema.EventAgentText, schema.EventToolCall, schema.EventToolResult,
	schema.EventUsage, schema.EventAgentRetry, schema.EventPermissionDenied}

// firstAgentEvent is the time of the build's first agent event.
func (f *fuEnv) firstAgentEvent(id string) time.Time {
	f.t.Helper()
	for _, ev := range f.events(f.d, id) {
		if slices.Contains(agentEventTypes, ev.Type) {
			return ev.Time
		}
	}
	f.t.Fatalf("build %s has no agent event", id)
	return time.Time{}
}

func write(path, content string) messagesapi.Turn {
	return messagesapi.Turn{Tools: []messagesapi.ToolUse{{Name: "Write", Input: map[string]any{"file_path": path, "content": content}}}}
}

func read(path string) messagesapi.Turn {
	return messagesapi.Turn{Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": path}}}}
}

func say(text string) messagesapi.Turn { return messagesapi.Turn{Text: text} }

// expect has the stand-in refuse the turn's request unless its
// conversation contains every text.
func expect(t messagesapi.Turn, texts ...string) messagesapi.Turn {
	t.Expect = texts
	return t
}

// Follow-ups, budgets, kept work and review branches with the real runner
// and CLI on one managed project (its subtests run in order, each on what
// the one before left).
func TestFollowups(t *testing.T) {
	f := newFollowupEnv(t)
	wd := f.p.Workdir
	file := func(name string) string { return wd + "/" + name }
	// Each subtest has the env's helpers fail it, not the parent.
	run := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(st *testing.T) {
			f.t = st
			f.freshModel()
			defer func() { f.t = t }()
			fn(st)
		})
	}

	// A build, its follow-up (which continues the agent's session: the
	// model sees the earlier conversation) and a follow-up of that one.
	run("chain", func(t *testing.T) {
		// Each CLI run is a conversation of the stand-in's own, taking the
		// next script; a follow-up's first turn expects the earlier
		// conversation in its request (the stand-in refuses it otherwise,
		// failing the build).
		f.model.Enqueue(messagesapi.Script{Name: "first", Turns: []messagesapi.Turn{
			write(file("one.txt"), "one\n"), say("one.txt holds one."),
		}}, messagesapi.Script{Name: "follow-up", Turns: []messagesapi.Turn{
			expect(write(file("two.txt"), "two\n"), "Write one.txt.", "one.txt holds one.", "Now write two.txt."),
			say("two.txt holds two."),
		}}, messagesapi.Script{Name: "follow-up of the follow-up", Turns: []messagesapi.Turn{
			expect(write(file("three.txt"), "three\n"), "Write one.txt.", "one.txt holds one.", "Now write two.txt.", "two.txt holds two.", "And three.txt."),
			say("three.txt holds three."),
		}})
		first := f.build(schema.BuildSpec{Prompt: "Write one.txt.", AutoCommit: true, AutoPush: true})
		completed(t, first)
		require.NotEmpty(t, first.Result.SessionID, "the result names the agent session")
		assert.Empty(t, first.ParentID)

		t1 := time.Now()
		id1 := f.mustFollowup(first.ID, schema.BuildSpec{Prompt: "Now write two.txt.", AutoCommit: true, AutoPush: true})
		fu1 := f.wait(id1)
		completed(t, fu1)
		assert.Equal(t, first.ID, fu1.ParentID)
		assert.Equal(t, first.Result.SessionID, fu1.Result.SessionID, "the follow-up continued the session")
		assert.Equal(t, []string{"two.txt"}, fu1.Result.FilesChanged, "the follow-up's commit holds its own change")
		assert.Equal(t, []string{id1}, f.get(f.d, first.ID).Followups)

		// The model got the earlier conversation with the follow-up's first request.
		reqs := f.turns(first.Result.SessionID, t1)
		require.NotEmpty(t, reqs, "the follow-up's agent reached the model in the earlier session")
		assert.Equal(t, "follow-up", reqs[0].Script)
		assert.Empty(t, reqs[0].Missing, "the follow-up's request lacks the earlier conversation")
		assert.Equal(t, 2, reqs[0].Earlier, "the follow-up's first request carries the earlier build's two answers")
		assert.Contains(t, reqs[0].Prompt, "Now write two.txt.")

		// The follow-up of the follow-up through the command line.
		t2 := time.Now()
		out, code := f.cli(f.d, "submit", "--followup", id1, "--auto-commit", "--auto-push", "And three.txt.")
		require.Equal(t, 0, code, "client submit --followup: %s", out)
		id2 := strings.TrimSpace(out)
		fu2 := f.wait(id2)
		completed(t, fu2)
		out, code = f.cli(f.d, "watch", id2)
		assert.Equal(t, 0, code, "%s", out)
		assert.Contains(t, out, "session: "+first.Result.SessionID, "watch names the session it continued")
		assert.Equal(t, id1, fu2.ParentID)
		assert.Equal(t, first.Result.SessionID, fu2.Result.SessionID)
		assert.Equal(t, []string{id2}, f.get(f.d, id1).Followups)
		assert.Equal(t, []string{id1}, f.get(f.d, first.ID).Followups, "a follow-up's follow-up is its own parent's")
		reqs = f.turns(first.Result.SessionID, t2)
		require.NotEmpty(t, reqs)
		assert.Empty(t, reqs[0].Missing)
		assert.Equal(t, 4, reqs[0].Earlier, "the follow-up of the follow-up carries both earlier runs")

		assert.Equal(t, fu2.Result.CommitSHA, f.git.Head(t, f.repo, f.branch))
		for _, name := range []string{"one.txt", "two.txt", "three.txt"} {
			_, ok := f.remoteFile(t, f.branch, name)
			assert.True(t, ok, "%s is on the project branch", name)
		}

		// A follow-up of no build is 404, and so is one of a build the
		// token may not see (another project's token); one without a
		// prompt is 422.
		code, body := f.followup("00000000-0000-7000-8000-000000000000", schema.BuildSpec{Prompt: "x"})
		assert.Equal(t, http.StatusNotFound, code, "%s", body)
		other := f.project(f.d, "other-"+randHex(3), 1)
		tok := strings.TrimSpace(f.run("token", "create", "--name", "other-bot", "--project", other.Name))
		foreign := &client.Client{BaseURL: f.d.url, Token: tok}
		_, err := foreign.Get(context.Background(), first.ID)
		require.Error(t, err, "another project's token sees the build")
		req, err := http.NewRequest(http.MethodPost, f.d.url+"/builds/"+first.ID+"/followups", strings.NewReader(`{"prompt":"x"}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusNotFound, res.StatusCode, "a follow-up of another project's build")
		code, body = f.followup(first.ID, schema.BuildSpec{})
		assert.Equal(t, http.StatusUnprocessableEntity, code, "%s", body)
		assert.Contains(t, string(body), "prompt")
		code, body = f.refused(schema.BuildSpec{Prompt: "x", Fallback: schema.FallbackFresh})
		assert.Equal(t, http.StatusUnprocessableEntity, code, "fallback on a build that is no follow-up: %s", body)
		assert.Contains(t, string(body), "fallback")
	})

	// A follow-up of a build that has not ended is refused (409) and makes
	// no build: the parent's agent is held waiting for the model meanwhile.
	run("unfinished parent", func(t *testing.T) {
		f.model.Enqueue(messagesapi.Script{Name: "slow", Turns: []messagesapi.Turn{{Text: "slowly done", Stall: 2 * time.Second}}})
		id := f.submit(f.d, f.p.ID, schema.BuildSpec{Prompt: "Take your time."})
		kbtest.WaitFor(t, 90*time.Second, "the agent to wait for the model", func(context.Context) (bool, error) {
			for _, r := range f.model.Requests() {
				if r.Stalled && r.InFlight {
					return true, nil
				}
			}
			return false, nil
		})
		code, body := f.followup(id, schema.BuildSpec{Prompt: "too soon"})
		assert.Equal(t, http.StatusConflict, code, "%s", body)
		assert.Contains(t, string(body), "running")

		// Meanwhile a build waits behind it and is cancelled before it
		// starts: it has no session, so its follow-up fails without a Job.
		never := f.submit(f.d, f.p.ID, schema.BuildSpec{Prompt: "Never mind."})
		require.Equal(t, schema.StatusPending, f.get(f.d, never).Status)
		f.cancel(f.d, never, "not needed")
		fid := f.mustFollowup(never, schema.BuildSpec{Prompt: "Go on."})
		fb := f.wait(fid)
		assert.Equal(t, schema.StatusFailed, fb.Status)
		assert.Equal(t, schema.ReasonSessionUnavailable, fb.Reason, fb.Error)
		assert.Contains(t, fb.Error, "never started the agent")
		assert.Empty(t, fb.JobName, "it failed at launch, without a Job")

		completed(t, f.wait(id))
		assert.Empty(t, f.get(f.d, id).Followups)
		for _, r := range f.turns("", time.Time{}) {
			assert.Equal(t, "slow", r.Script, "only the slow build's agent reached the model")
		}
	})

	// A review branch: the commit goes to review/<id> on the remote; the
	// project branch does not move.
	run("review branch", func(t *testing.T) {
		before := f.git.Head(t, f.repo, f.branch)
		f.model.Enqueue(messagesapi.Script{Name: "review", Turns: []messagesapi.Turn{
			write(file("review.txt"), "please review\n"), say("review.txt is ready for review."),
		}})
		b := f.build(schema.BuildSpec{Prompt: "Propose review.txt.", AutoCommit: true, AutoPush: true, Branch: "review/{task_id}"})
		completed(t, b)
		want := "review/" + b.ID
		assert.Equal(t, want, b.Result.Branch, "the result names the branch")
		heads := f.remoteBranches(t)
		require.Contains(t, heads, want, "the remote has the review branch")
		assert.Equal(t, b.Result.CommitSHA, heads[want])
		assert.Equal(t, before, heads[f.branch], "the project branch is unchanged")
		got, ok := f.remoteFile(t, want, "review.txt")
		assert.True(t, ok)
		assert.Equal(t, "please review", got)
		_, ok = f.remoteFile(t, f.branch, "review.txt")
		assert.False(t, ok, "the change is not on the project branch")

		code, body := f.refused(schema.BuildSpec{Prompt: "x", Branch: "no..dots"})
		assert.Equal(t, http.StatusUnprocessableEntity, code, "%s", body)
		assert.Contains(t, string(body), "branch")
	})

	// A budget stop after the agent wrote a file: the build fails with
	// budget_exceeded saying what it spent; the file is kept on kiln/<id>
	// on the remote; a follow-up starts from it.
	run("budget stop keeps work", func(t *testing.T) {
		before := f.git.Head(t, f.repo, f.branch)
		// The first turn writes the file; the second reports usage the CLI
		// prices at $0.12 (messagesapi.BigUsage), past the build's $0.05.
		marker := "kept-" + randHex(6)
		f.model.Enqueue(messagesapi.Script{Name: "budget", Turns: []messagesapi.Turn{
			write(file("kept.txt"), marker+"\n"),
			{Tools: read(file("README.md")).Tools, Usage: messagesapi.BigUsage},
			say("not reached"),
		}})
		budget := 0.05
		b := f.build(schema.BuildSpec{Prompt: "Write kept.txt, then think hard.", AutoCommit: true, AutoPush: true, MaxBudgetUSD: &budget})
		require.Equal(t, schema.StatusFailed, b.Status, "a budget stop fails the build: %s", b.Error)
		assert.Equal(t, schema.ReasonBudgetExceeded, b.Reason)
		require.NotNil(t, b.Result)
		require.NotNil(t, b.Result.Usage, "the result says what the agent spent")
		assert.Greater(t, b.Result.Usage.CostUSD, budget)
		assert.Contains(t, b.Error, "0.12", "the error says what it spent")
		assert.Contains(t, b.Error, "0.05", "the error names the budget")

		want := schema.KeptWorkBranch(b.ID)
		assert.Equal(t, want, b.Result.PartialBranch)
		require.Len(t, b.Result.PartialCommitSHA, 40)
		assert.True(t, b.Result.PartialPushed, "auto_push: the kept work is pushed")
		assert.Empty(t, b.Result.CommitSHA, "nothing was committed to the project branch")
		heads := f.remoteBranches(t)
		assert.Equal(t, b.Result.PartialCommitSHA, heads[want], "the remote has %s at the kept commit", want)
		assert.Equal(t, before, heads[f.branch], "the project branch is unchanged")
		got, ok := f.remoteFile(t, want, "kept.txt")
		assert.True(t, ok, "the kept branch holds the file")
		assert.Equal(t, marker, got)

		// What the month's spend shows, and the caps.
		code, p, body := f.getProject(f.d, f.p.ID)
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.NotNil(t, p.Spend, "GET /projects/{id} shows the month's spend: %s", body)
		assert.Equal(t, time.Now().UTC().Format("2006-01"), p.Spend.Month)
		assert.GreaterOrEqual(t, p.Spend.CostUSD, b.Result.Usage.CostUSD)
		assert.GreaterOrEqual(t, p.Spend.Builds, 1)
		code, body = f.refused(schema.BuildSpec{Prompt: "x", Template: "capped"})
		assert.Equal(t, http.StatusTooManyRequests, code, "past the monthly cap: %s", body)
		assert.Contains(t, string(body), "monthly-budget", "the problem's type")
		assert.Contains(t, string(body), "monthlyBudgetUSD", "the problem names the cap")
		code, _ = f.refused(schema.BuildSpec{Prompt: "x"})
		assert.Equal(t, http.StatusAccepted, code, "the cap is the capped template's only")
		over, turns := 1000.0, 100000
		code, body = f.refused(schema.BuildSpec{Prompt: "x", MaxBudgetUSD: &over})
		assert.Equal(t, http.StatusUnprocessableEntity, code, "%s", body)
		assert.Contains(t, string(body), "max_budget_usd")
		assert.Contains(t, string(body), "25", "the problem names the template's cap")
		code, body = f.refused(schema.BuildSpec{Prompt: "x", MaxTurns: &turns})
		assert.Equal(t, http.StatusUnprocessableEntity, code, "%s", body)
		assert.Contains(t, string(body), "max_turns")
		assert.Contains(t, string(body), "200", "the problem names the template's cap")

		// A follow-up starts from the kept work: it resumes the session and
		// its agent first reads the file; the turn after that expects the
		// file's content in the conversation, which only that read can have
		// put there (the stand-in refuses the request otherwise, failing the
		// build).
		f.model.Enqueue(messagesapi.Script{Name: "after the budget", Turns: []messagesapi.Turn{
			expect(read(file("kept.txt")), "Write kept.txt, then think hard."),
			expect(write(file("after.txt"), "after\n"), marker),
			say("after.txt added to the kept work."),
		}})
		t1 := time.Now()
		id := f.mustFollowup(b.ID, schema.BuildSpec{Prompt: "Finish the kept work.", AutoCommit: true, AutoPush: true})
		fu := f.wait(id)
		completed(t, fu)
		reqs := f.turns(b.Result.SessionID, t1)
		require.GreaterOrEqual(t, len(reqs), 2, "the follow-up's agent read the file")
		assert.Equal(t, "after the budget", reqs[0].Script)
		assert.Positive(t, reqs[0].Earlier, "the follow-up continued the stopped session")
		for _, r := range reqs {
			assert.Empty(t, r.Missing, "turn %d: the file was not there before the agent acted", r.Turn)
		}
		for _, name := range []string{"kept.txt", "after.txt"} {
			_, ok := f.remoteFile(t, f.branch, name)
			assert.True(t, ok, "%s is on the project branch after the follow-up", name)
		}
	})

	// A run stopped at its max_turns keeps its work too; without auto_push
	// the branch stays in the workspace.
	run("max turns keeps work unpushed", func(t *testing.T) {
		before := f.git.Head(t, f.repo, f.branch)
		f.model.Enqueue(messagesapi.Script{Name: "max turns", Turns: []messagesapi.Turn{
			write(file("halfway.txt"), "halfway\n"), write(file("never.txt"), "never\n"), say("not reached"),
		}})
		one := 1
		b := f.build(schema.BuildSpec{Prompt: "Write halfway.txt, then more.", AutoCommit: true, MaxTurns: &one})
		require.Equal(t, schema.StatusFailed, b.Status, b.Error)
		assert.Equal(t, schema.ReasonMaxTurns, b.Reason, b.Error)
		require.NotNil(t, b.Result)
		want := schema.KeptWorkBranch(b.ID)
		assert.Equal(t, want, b.Result.PartialBranch)
		require.Len(t, b.Result.PartialCommitSHA, 40)
		assert.False(t, b.Result.PartialPushed, "no auto_push: the kept work is not pushed")
		assert.Equal(t, []string{"halfway.txt"}, b.Result.FilesChanged)
		heads := f.remoteBranches(t)
		assert.NotContains(t, heads, want, "the remote has the kept branch of a build without auto_push")
		assert.Equal(t, before, heads[f.branch], "the project branch is unchanged")
		assert.Equal(t, b.Result.PartialCommitSHA,
			mustExec(t, f.p.Namespace, f.p.PodName, "git -C "+wd+" rev-parse refs/heads/"+want), "the workspace has the kept branch")
		assert.Equal(t, "halfway", mustExec(t, f.p.Namespace, f.p.PodName, "git -C "+wd+" show "+b.Result.PartialCommitSHA+":halfway.txt"))
	})

	// Submit → first agent event of a follow-up against a fresh build's,
	// alternating, in the same run.
	run("measure", func(t *testing.T) {
		n := 5
		if v := os.Getenv("KILN_E2E_MEASURE"); v != "" {
			var err error
			n, err = strconv.Atoi(v)
			require.NoError(t, err, "KILN_E2E_MEASURE: a number of runs")
		}
		var fresh, follow []time.Duration
		for i := range n {
			f.model.Enqueue(messagesapi.Script{Name: fmt.Sprintf("fresh %d", i), Turns: []messagesapi.Turn{say("fresh answer")}})
			t0 := time.Now()
			id := f.submit(f.d, f.p.ID, schema.BuildSpec{Prompt: fmt.Sprintf("Say something (%d).", i)})
			completed(t, f.wait(id))
			fresh = append(fresh, f.firstAgentEvent(id).Sub(t0))

			f.model.Enqueue(messagesapi.Script{Name: fmt.Sprintf("follow-up %d", i), Turns: []messagesapi.Turn{
				expect(say("follow-up answer"), "fresh answer")}})
			t1 := time.Now()
			fid := f.mustFollowup(id, schema.BuildSpec{Prompt: "And once more."})
			completed(t, f.wait(fid))
			follow = append(follow, f.firstAgentEvent(fid).Sub(t1))
		}
		p50f, p50u := benchproc.Percentile(fresh, 50), benchproc.Percentile(follow, 50)
		ratio := p50u.Seconds() / p50f.Seconds()
		verdict := "met"
		if ratio > 1.5 {
			verdict = "missed"
		}
		t.Logf("submit → first agent event, %d runs each: fresh p50 %s %v; follow-up p50 %s %v", n,
			p50f.Round(time.Millisecond), roundAll(fresh), p50u.Round(time.Millisecond), roundAll(follow))
		t.Logf("target: followup first-event latency = %.2fx fresh (goal ≤ 1.5x) %s", ratio, verdict)
	})

	// The workspace pod is replaced: the session is gone. A follow-up fails
	// fast with session_unavailable; with fallback fresh it completes in a
	// new session that was given the earlier prompt and output.
	run("pod replaced", func(t *testing.T) {
		f.model.Enqueue(messagesapi.Script{Name: "before the pod goes", Turns: []messagesapi.Turn{say("The answer is forty-two.")}})
		s := f.build(schema.BuildSpec{Prompt: "What is the answer?"})
		completed(t, s)
		require.NotEmpty(t, s.Result.SessionID)
		f.replacePod(t)

		t0 := time.Now()
		id := f.mustFollowup(s.ID, schema.BuildSpec{Prompt: "And the question?"})
		b := f.wait(id)
		t.Logf("session_unavailable: submit → failed %s", time.Since(t0).Round(time.Millisecond))
		require.Equal(t, schema.StatusFailed, b.Status, b.Error)
		assert.Equal(t, schema.ReasonSessionUnavailable, b.Reason, b.Error)
		assert.Equal(t, s.ID, b.ParentID)
		assert.Empty(t, f.turns("", t0), "the agent did not reach the model")

		t1 := time.Now()
		f.model.Enqueue(messagesapi.Script{Name: "fresh after the pod", Turns: []messagesapi.Turn{
			expect(say("The question is unknown."), "What is the answer?", "The answer is forty-two.", "And the question?")}})
		id2 := f.mustFollowup(s.ID, schema.BuildSpec{Prompt: "And the question?", Fallback: schema.FallbackFresh})
		fb := f.wait(id2)
		completed(t, fb)
		assert.Equal(t, s.ID, fb.ParentID)
		assert.NotEqual(t, s.Result.SessionID, fb.Result.SessionID, "a new session")
		reqs := f.turns("", t1)
		require.NotEmpty(t, reqs, "the fresh session reached the model")
		assert.Equal(t, "fresh after the pod", reqs[0].Script)
		assert.Zero(t, reqs[0].Earlier, "a new conversation")
		assert.NotEqual(t, s.Result.SessionID, reqs[0].SessionID)
		assert.Empty(t, reqs[0].Missing, "the new session is given the earlier prompt and output, and its own prompt")
		assert.Equal(t, []string{id, id2}, f.get(f.d, s.ID).Followups)
	})
}

// replacePod deletes the project's workspace pod and waits for its
// StatefulSet's new one to be Ready.
func (f *fuEnv) replacePod(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pods := cluster.Client.CoreV1().Pods(f.p.Namespace)
	old, err := pods.Get(ctx, f.p.PodName, metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, pods.Delete(ctx, f.p.PodName, metav1.DeleteOptions{}))
	t0 := time.Now()
	kbtest.WaitFor(t, 2*time.Minute, "the new workspace pod to be ready", func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, f.p.PodName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.UID == old.UID {
			return false, fmt.Errorf("the old pod is still there")
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("the new pod is %s", p.Status.Phase)
	})
	t.Logf("workspace pod replaced in %s", time.Since(t0).Round(time.Millisecond))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
