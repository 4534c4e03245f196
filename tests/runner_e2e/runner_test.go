package runner_e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/messagesapi"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// TestRunner runs the real jobrunner as a kubebox Job against a stand-in
// dispatcher, one cluster for all cases.
func TestRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("kubebox end-to-end")
	}
	env := harness.Setup(t)
	for _, c := range []struct {
		name string
		run  func(*testing.T, *harness.Env)
	}{
		{"success commits and pushes", testSuccess},
		{"failing agent", testFailingAgent},
		{"missing variable", testMissingVariable},
		{"cancel by deleting the job", testCancelJobDeleted},
		{"cancel seen from the dispatcher", testCancelFromDispatcher},
		{"dispatcher unreachable at the end", testDispatcherUnreachable},
		{"push rejected", testPushRejected},
		{"runner lost", testRunnerLost},
		{"two builds in a row", testLeftovers},
		{"real CLI scenarios", testCLI},
		{"private repository with a token", testPrivateRepo},
		{"private repository with a wrong token", testPrivateRepoWrongToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, env)
		})
	}
}

func testSuccess(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "ok", harness.ProjectOptions{})
	id := "b-success-1"
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB: far beyond argv comfort
	spec := schema.BuildSpec{
		Prompt:     "Change the heading for {{ ticket }} to \"Welcome to Acme\".\n{{ context }}",
		Variables:  map[string]string{"ticket": "ACME-42", "context": big},
		AutoCommit: true, AutoPush: true,
	}
	bigText := strings.Repeat("x", 200000) // one 200 KB stdout line from the CLI
	script := harness.EditScript(p, "index.html", "<h1>Hello</h1>", "<h1>Welcome to Acme</h1>",
		`Updated the heading in index.html to "Welcome to Acme".`)
	script.Turns[0].Text = bigText
	p.API.Enqueue(script)
	// Build outputs (ignored by git) for the artifact globs; one is over the size limit.
	require.NoError(t, os.MkdirAll(filepath.Join(p.Workdir, "dist"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(p.Workdir, "dist", "report.txt"), []byte("all good\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(p.Workdir, "dist", "huge.txt"), make([]byte, 5000), 0o644))
	tmpl, ok := jobtemplates.Embedded().Get("default")
	require.True(t, ok)
	tmpl.TerminationGracePeriodSeconds = 20
	tmpl.Artifacts = jobtemplates.Artifacts{Globs: []string{"dist/*.txt", "*.html"}, MaxBytes: 4096}
	start := time.Now()
	job := env.StartBuild(t, p, id, spec, harness.BuildOptions{Template: tmpl})
	pod := env.WaitJobPod(t, job, 2*time.Minute)
	elapsed := time.Since(start)
	b := env.Dispatcher.Get(id)
	st, _ := json.MarshalIndent(pod.Status, "", " ")
	require.Len(t, b.ResultPosts, 1, "after %s; runner log:\n%s\nstatus: %s", elapsed, env.Logs(pod), st)
	res := b.ResultPosts[0]
	t.Logf("build took %s (result duration_ms %d); %d batches, %d events", elapsed, res.DurationMS, len(b.Batches), len(b.Events()))

	// The runner exited 0 and left its summary.
	term := pod.Status.ContainerStatuses[0].State.Terminated
	require.EqualValues(t, 0, term.ExitCode, "runner log:\n%s", env.Logs(pod))
	var sum schema.TerminationSummary
	require.NoError(t, json.Unmarshal([]byte(term.Message), &sum), term.Message)
	require.Equal(t, schema.TerminationSummary{Kiln: 1, Success: true, CommitSHA: res.CommitSHA, FilesChanged: 1,
		DurationMS: res.DurationMS, Reported: true}, sum)

	// Exec went over WebSocket: no fallback to SPDY was needed.
	logs := env.Logs(pod)
	require.NotContains(t, logs, "falling back to SPDY")
	require.NotContains(t, logs, "runner-token-", "the token never appears in logs")

	// Every BuildResult field.
	require.True(t, res.Success, res.Error)
	require.Empty(t, res.Error)
	require.False(t, res.Cancelled)
	require.Equal(t, `Updated the heading in index.html to "Welcome to Acme".`, res.Output)
	require.Equal(t, []string{"index.html"}, res.FilesChanged)
	require.Len(t, res.CommitSHA, 40)
	require.Positive(t, res.DurationMS)
	require.Less(t, res.DurationMS, elapsed.Milliseconds()+1)
	index, err := os.ReadFile(filepath.Join(p.Workdir, "index.html"))
	require.NoError(t, err)
	require.ElementsMatch(t, []schema.Artifact{
		{Name: "report.txt", Path: "dist/report.txt", Size: 9, SHA256: sha256hex([]byte("all good\n")), URL: schema.ArtifactURL(id, "dist/report.txt")},
		{Name: "index.html", Path: "index.html", Size: int64(len(index)), SHA256: sha256hex(index), URL: schema.ArtifactURL(id, "index.html")},
	}, res.Artifacts)
	uploaded := env.Dispatcher.Get(id).Artifacts
	require.Equal(t, "all good\n", string(uploaded["dist/report.txt"]), "the artifact's content was uploaded")
	require.Equal(t, index, uploaded["index.html"])
	require.NotNil(t, res.Usage)
	require.Equal(t, 3, res.Usage.Turns, "three model turns: read, edit, answer")
	require.EqualValues(t, scriptTokens(script, true), res.Usage.InputTokens, "the turns' input tokens, summed")
	require.EqualValues(t, scriptTokens(script, false), res.Usage.OutputTokens)
	require.Positive(t, res.Usage.CostUSD)

	// The commit is in the remote, with the right author, message, trailer and files.
	remote := p.Remote
	require.Equal(t, res.CommitSHA, p.Git(t, remote, "rev-parse", "main"))
	require.Equal(t, "Kiln Bot <bot@kiln.example>|Kiln Bot <bot@kiln.example>", p.Git(t, remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main"))
	require.Equal(t, "Kiln build "+id, p.Git(t, remote, "log", "-1", "--format=%s", "main"))
	require.Equal(t, id, p.Git(t, remote, "log", "-1", "--format=%(trailers:key=Kiln-Build-Id,valueonly)", "main"))
	require.Contains(t, p.Git(t, remote, "log", "-1", "--format=%b", "main"), "Change the heading for {{ ticket }} to")
	require.Equal(t, "index.html", p.Git(t, remote, "show", "--format=", "--name-only", "main"))
	require.Contains(t, p.Git(t, remote, "show", "main:index.html"), "<h1>Welcome to Acme</h1>")

	// The prompt reached the model whole and rendered (the runner sends it on
	// stdin: a 320 KiB argv would not do). The CLI made one request per turn.
	reqs := turns(p.API.Requests())
	require.Len(t, reqs, 3)
	got := reqs[0].Prompt
	require.Contains(t, got, "You are working in a git repository") // the template's preamble
	require.Contains(t, got, `Change the heading for ACME-42 to "Welcome to Acme".`)
	require.True(t, strings.HasSuffix(strings.TrimSpace(got), big), "the prompt ends with the 320 KiB variable")
	require.Len(t, reqs[2].ToolResults, 1)
	require.False(t, reqs[2].ToolResults[0].IsError, "the edit went through: %s", reqs[2].ToolResults[0].Content)

	// Events: ordered batches 1..n, none stored twice, the agent's story in order.
	requireBatches(t, b)
	var sawBig bool
	for _, e := range b.Events() {
		if e.Type == schema.EventAgentText {
			if p, err := e.Decode(); err == nil && p.(schema.AgentTextPayload).Text == bigText {
				sawBig = true
			}
		}
	}
	require.True(t, sawBig, "a 200 KB output line arrived whole")
	requireInOrder(t, b.Events(), "agent_text", "tool_call Read", "tool_result", "tool_call Edit", "tool_result",
		"agent_text", "usage", "git", "log artifact skipped: dist/huge.txt")
	var git schema.GitPayload
	for _, e := range b.Events() {
		if e.Type == schema.EventGit {
			p, err := e.Decode()
			require.NoError(t, err)
			git = p.(schema.GitPayload)
		}
	}
	require.Equal(t, res.CommitSHA, git.CommitSHA)
	require.True(t, git.Pushed)
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// requireBatches checks the stored batches are numbered 1..n with no gaps or duplicates.
func requireBatches(t *testing.T, b harness.Build) {
	t.Helper()
	require.NotEmpty(t, b.Batches)
	for i, bt := range b.Batches {
		require.EqualValues(t, i+1, bt.Batch)
		require.NotEmpty(t, bt.Events)
	}
	require.Zero(t, b.Gaps)
}

func testFailingAgent(t *testing.T, env *harness.Env) {
	for _, tc := range []struct {
		name     string
		selector bool
		maxTurns int
		script   messagesapi.Script
		err      string // the error starts with it
		reason   schema.Reason
	}{
		// Every API call is refused as overloaded: the CLI gives up after its own 3 tries.
		{"overloaded", false, 0, messagesapi.Script{Name: "overloaded", Turns: []messagesapi.Turn{
			{Error: &messagesapi.APIError{Status: 529, Message: "Overloaded"}}}},
			"", schema.ReasonAgentUnavailable},
		// The model keeps calling tools past the template's limit of 2 turns.
		{"max-turns", true, 2, messagesapi.Script{Name: "max-turns", Turns: []messagesapi.Turn{
			{Tools: []messagesapi.ToolUse{{Name: "Glob", Input: map[string]any{"pattern": "*.html"}}}},
			{Tools: []messagesapi.ToolUse{{Name: "Glob", Input: map[string]any{"pattern": "*.css"}}}},
			{Tools: []messagesapi.ToolUse{{Name: "Glob", Input: map[string]any{"pattern": "*.js"}}}},
			{Text: "never reached"}}},
			"agent stopped: reached the maximum number of turns (2)", schema.ReasonMaxTurns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := env.NewProject(t, tc.name, harness.ProjectOptions{AllowList: tc.selector})
			seed := p.Git(t, p.Remote, "rev-parse", "main")
			id := "b-" + tc.name
			o := harness.BuildOptions{Template: defaultTemplate(t)}
			if tc.maxTurns > 0 {
				o.Template.Agent.MaxTurns = tc.maxTurns
			}
			if tc.selector {
				// Found by label selector: the runner's Role needs list for that.
				target := p.Target()
				target.PodName, target.PodSelector = "", "kiln-project="+p.Name
				o.Target = &target
			}
			p.API.Enqueue(tc.script)
			job := env.StartBuild(t, p, id, schema.BuildSpec{
				Prompt: "Run the tests.", AutoCommit: true, AutoPush: true,
			}, o)
			pod := env.WaitJobPod(t, job, 3*time.Minute)
			b := env.Dispatcher.Get(id)
			require.Len(t, b.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
			res := b.ResultPosts[0]
			require.False(t, res.Success)
			require.False(t, res.Cancelled)
			require.True(t, strings.HasPrefix(res.Error, tc.err), res.Error)
			require.Equal(t, tc.reason, res.Reason, res.Error)
			require.NotNil(t, res.Usage)
			if tc.maxTurns > 0 {
				require.Len(t, turns(p.API.Requests()), tc.maxTurns, "the CLI stopped asking the model")
			} else {
				require.Contains(t, res.Error, "529")
				require.Contains(t, res.Error, "Overloaded", "the API's own message")
			}
			require.Empty(t, res.CommitSHA)
			require.Equal(t, []string{}, res.FilesChanged)
			require.Equal(t, schema.StatusFailed, b.Status)
			require.Equal(t, seed, p.Git(t, p.Remote, "rev-parse", "main"), "nothing pushed")
			require.EqualValues(t, 0, pod.Status.ContainerStatuses[0].State.Terminated.ExitCode, "a failed build that was reported exits 0")
			requireBatches(t, b)
		})
	}
}

func testMissingVariable(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "missing", harness.ProjectOptions{})
	id := "b-missing"
	job := env.StartBuild(t, p, id, schema.BuildSpec{
		Prompt:    "Fix {{ ticket }} in {{repo}}.",
		Variables: map[string]string{"repo": "acme"}, AutoCommit: true,
	}, harness.BuildOptions{})
	pod := env.WaitJobPod(t, job, 2*time.Minute)
	b := env.Dispatcher.Get(id)
	require.Len(t, b.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
	res := b.ResultPosts[0]
	require.False(t, res.Success)
	require.Equal(t, `prompt: missing variable "ticket"`, res.Error)
	require.Equal(t, schema.ReasonRunnerError, res.Reason)
	require.Empty(t, res.CommitSHA)
	require.Equal(t, []string{}, res.FilesChanged)
	require.Empty(t, p.API.Requests(), "the agent never ran")
	var sum schema.TerminationSummary
	require.NoError(t, json.Unmarshal([]byte(pod.Status.ContainerStatuses[0].State.Terminated.Message), &sum))
	require.Equal(t, schema.TerminationSummary{Kiln: 1, Error: res.Error, Reason: schema.ReasonRunnerError,
		DurationMS: res.DurationMS, Reported: true}, sum)
}

// waitPID waits for a pid file in the project's state directory.
func waitPID(t *testing.T, p *harness.Project, name string) int {
	t.Helper()
	var pid int
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(p.State, name))
		if err == nil {
			if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in %s", name, p.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testCancelJobDeleted(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "cancel", harness.ProjectOptions{})
	id := "b-cancel"
	// The agent runs a Bash tool command that ignores SIGTERM and loops (the
	// CLI runs it in its own session); it and the CLI must be gone afterwards.
	pidFile := filepath.Join(p.State, "loop.pid")
	p.Commit(t, "a slow script", map[string]string{"tools/loop.sh": loopScript})
	p.API.Enqueue(loopBashScript(pidFile))
	before := p.AgentProcs(nil)
	job := env.StartBuild(t, p, id, schema.BuildSpec{Prompt: "Run the soak test.", AutoCommit: true, AutoPush: true},
		harness.BuildOptions{Template: bashTemplate(t, "Bash(tools/loop.sh:*)")})
	loop := waitPID(t, p, "loop.pid")
	require.True(t, harness.Alive(loop))
	running := p.AgentProcs(before)
	require.NotEmpty(t, running)
	runner := env.RunnerPod(t, job)
	time.Sleep(500 * time.Millisecond) // let a batch of events through

	deleted := time.Now()
	require.NoError(t, env.Client.BatchV1().Jobs(harness.RunnerNamespace).Delete(context.Background(), job.Name,
		metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}))
	b := env.Dispatcher.WaitResult(t, id, 30*time.Second)
	took := time.Since(deleted)
	t.Logf("job deleted → cancelled result in %s", took)
	require.Less(t, took, 20*time.Second, "within the grace period")
	require.Len(t, b.ResultPosts, 1)
	res := b.ResultPosts[0]
	require.True(t, res.Cancelled, "runner log:\n%s", env.Logs(runner))
	require.False(t, res.Success)
	require.Contains(t, res.Error, "cancelled: the runner was asked to stop")
	require.Empty(t, res.CommitSHA, "git skipped")
	require.Equal(t, schema.StatusCancelled, b.Status)
	require.False(t, harness.Alive(loop), "the Bash tool's loop %d still running", loop)
	requireGone(t, p, id, before, running)
	_, err := os.Stat("/tmp/kiln-" + id + ".pid")
	require.ErrorIs(t, err, os.ErrNotExist, "pid file removed")
	require.Equal(t, p.Git(t, p.Remote, "rev-parse", "main"), p.Git(t, p.Workdir, "rev-parse", "HEAD"))
	requireBatches(t, b)
	var stopped bool
	var all []string
	for _, e := range b.Events() {
		all = append(all, string(e.Type)+" "+string(e.Payload))
		if p, err := e.Decode(); err == nil {
			if l, ok := p.(schema.LogPayload); ok && strings.HasPrefix(l.Message, "agent (pid") {
				require.NotContains(t, l.Message, "still running")
				stopped = strings.Contains(l.Message, "stopped with SIGTERM") || strings.Contains(l.Message, "killed with SIGKILL")
			}
		}
	}
	require.True(t, stopped, "the stop is in the events:\n%s", strings.Join(all, "\n"))
}

func testCancelFromDispatcher(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "dcancel", harness.ProjectOptions{})
	id := "b-dcancel"
	// The model takes its time: its second answer stalls until the CLI goes away.
	p.API.Enqueue(harness.StallScript())
	before := p.AgentProcs(nil)
	job := env.StartBuild(t, p, id, schema.BuildSpec{Prompt: "Think it over."}, harness.BuildOptions{})
	running := waitStall(t, p, before)
	requireSafeArgv(t, running)
	cancelledAt := time.Now()
	env.Dispatcher.Update(id, func(b *harness.Build) { b.Status = schema.StatusCancelled })
	env.Dispatcher.WaitResult(t, id, 30*time.Second)
	t.Logf("dispatcher cancel → cancelled result in %s (status poll every 5s)", time.Since(cancelledAt))
	pod := env.WaitJobPod(t, job, time.Minute)
	b := env.Dispatcher.Get(id)
	require.Len(t, b.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
	res := b.ResultPosts[0]
	require.True(t, res.Cancelled)
	require.False(t, res.Success)
	require.Contains(t, res.Error, "the dispatcher reports the build as terminal")
	require.Nil(t, b.Accepted, "the build was already terminal")
	require.Positive(t, b.Refused, "the result (and any later batch) was answered 409")
	var sum schema.TerminationSummary
	require.NoError(t, json.Unmarshal([]byte(pod.Status.ContainerStatuses[0].State.Terminated.Message), &sum))
	require.True(t, sum.Reported, "a 409 to the result is an answer, not a failure to report")
	requireGone(t, p, id, before, running)
	requireStalledCut(t, p)
	require.EqualValues(t, 0, pod.Status.ContainerStatuses[0].State.Terminated.ExitCode)
}

func testDispatcherUnreachable(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "unreach", harness.ProjectOptions{})
	id := "b-unreach"
	p.API.Enqueue(harness.EditScript(p, "index.html", "<h1>Hello</h1>", "<h1>Welcome to Acme</h1>", "Done."))
	job := env.StartBuild(t, p, id, schema.BuildSpec{
		Prompt: "Change the heading to Welcome to Acme.", AutoCommit: true,
	}, harness.BuildOptions{ExtraEnv: []corev1.EnvVar{{Name: "KILN_REPORT_TIMEOUT", Value: "4s"}}})
	env.Dispatcher.Update(id, func(b *harness.Build) { b.DropResults = true })
	pod := env.WaitJobPod(t, job, 2*time.Minute)
	term := pod.Status.ContainerStatuses[0].State.Terminated
	require.NotEqualValues(t, 0, term.ExitCode, "runner log:\n%s", env.Logs(pod))
	b := env.Dispatcher.Get(id)
	require.Greater(t, len(b.ResultPosts), 1, "retried")
	var sum schema.TerminationSummary
	require.NoError(t, json.Unmarshal([]byte(term.Message), &sum), term.Message)
	require.False(t, sum.Reported)
	require.True(t, sum.Success)
	require.Equal(t, 1, sum.FilesChanged)
	require.Equal(t, p.Git(t, p.Workdir, "rev-parse", "HEAD"), sum.CommitSHA)
	require.Contains(t, sum.Error, "result not reported")
	require.Less(t, len(term.Message), 4096)
}

func testPushRejected(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "reject", harness.ProjectOptions{})
	id := "b-reject"
	// The model reads the page, then takes 5 s before its edit.
	script := harness.EditScript(p, "index.html", "<h1>Hello</h1>", "<h1>Welcome to Acme</h1>", "Done.")
	script.Turns[1].Stall = 5 * time.Second
	p.API.Enqueue(script)
	job := env.StartBuild(t, p, id, schema.BuildSpec{
		Prompt: "Change the heading to Welcome to Acme.", AutoCommit: true, AutoPush: true,
	}, harness.BuildOptions{})
	// Someone else pushes while the agent works (the workspace was brought
	// to the remote's head before it started): the workspace is behind.
	kbtest.WaitFor(t, 90*time.Second, "the agent at work", func(context.Context) (bool, error) {
		return len(turns(p.API.Requests())) > 0, nil
	})
	other := filepath.Join(t.TempDir(), "other")
	p.Git(t, filepath.Dir(other), "clone", "-q", p.Remote, other)
	require.NoError(t, os.WriteFile(filepath.Join(other, "NEWS"), []byte("news\n"), 0o644))
	p.Git(t, other, "add", "NEWS")
	p.Git(t, other, "-c", "user.name=O", "-c", "user.email=o@example.com", "commit", "-q", "-m", "other")
	p.Git(t, other, "push", "-q", "origin", "HEAD:main")
	theirs := p.Git(t, p.Remote, "rev-parse", "main")

	pod := env.WaitJobPod(t, job, 2*time.Minute)
	b := env.Dispatcher.Get(id)
	require.Len(t, b.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
	res := b.ResultPosts[0]
	require.False(t, res.Success)
	require.Contains(t, res.Error, "non-fast-forward")
	require.Contains(t, res.Error, "rejected", "git's own message")
	require.Equal(t, schema.ReasonPushRejected, res.Reason)
	require.Len(t, res.CommitSHA, 40, "the commit is kept")
	require.Equal(t, res.CommitSHA, p.Git(t, p.Workdir, "rev-parse", "HEAD"))
	require.Equal(t, theirs, p.Git(t, p.Remote, "rev-parse", "main"), "no force push")
	require.Equal(t, []string{"index.html"}, res.FilesChanged)
}

// runnerPID finds the host process of a build's jobrunner (kubebox runs
// containers as host processes).
func runnerPID(t *testing.T, env *harness.Env, id string) int {
	t.Helper()
	var found int
	waitUntil(t, 60*time.Second, func() bool {
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			exe, err := os.Readlink(d + "/exe")
			if err != nil || exe != env.Bin.JobRunner {
				continue
			}
			b, err := os.ReadFile(d + "/environ")
			if err == nil && slices.Contains(strings.Split(string(b), "\x00"), jobtemplates.EnvBuildID+"="+id) {
				found, _ = strconv.Atoi(filepath.Base(d))
				return true
			}
		}
		return false
	})
	return found
}

func waitUntil(t *testing.T, timeout time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", timeout)
		}
	}
}

// The runner dies (SIGKILL: no chance to stop anything). Its exec stream
// goes with it, and the wrapper in the project pod stops the agent and the
// process the agent started in a session of its own.
func testRunnerLost(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "lost", harness.ProjectOptions{})
	id := "b-lost"
	// The agent runs a looping Bash tool command (in a session of its own).
	p.Commit(t, "a slow script", map[string]string{"tools/loop.sh": loopScript})
	p.API.Enqueue(loopBashScript(filepath.Join(p.State, "loop.pid")))
	before := p.AgentProcs(nil)
	job := env.StartBuild(t, p, id, schema.BuildSpec{Prompt: "Run the soak test."},
		harness.BuildOptions{Template: bashTemplate(t, "Bash(tools/loop.sh:*)")})
	tool := waitPID(t, p, "loop.pid")
	running := p.AgentProcs(before)
	pid := claudeProc(t, running)

	// The agent carries the run's marker, and none of the runner's secrets.
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	require.NoError(t, err)
	vars := strings.Split(string(environ), "\x00")
	require.Contains(t, vars, "KILN_AGENT_RUN="+id)
	require.NotContains(t, string(environ), "runner-token-")
	require.NotContains(t, string(environ), jobtemplates.EnvRunnerToken)

	runner := runnerPID(t, env, id)
	lost := time.Now()
	require.NoError(t, syscall.Kill(runner, syscall.SIGKILL))
	waitUntil(t, 30*time.Second, func() bool { return !harness.Alive(pid) && !harness.Alive(tool) })
	t.Logf("runner killed → agent and its tool gone in %s", time.Since(lost).Round(time.Millisecond))
	requireGone(t, p, id, before, running)
	pod := env.WaitJobPod(t, job, time.Minute)
	require.NotEqualValues(t, 0, pod.Status.ContainerStatuses[0].State.Terminated.ExitCode)
	require.Empty(t, env.Dispatcher.Get(id).ResultPosts, "the runner died before reporting")
}

// Build 1 runs without auto-commit and leaves its edit (and a scratch file)
// in the workspace. Build 2 starts clean: its commit holds only its own
// change, and what build 1 left is kept on build 1's leftovers ref.
func testLeftovers(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "leftovers", harness.ProjectOptions{})
	seed := p.Git(t, p.Remote, "rev-parse", "main")
	// Build 1's agent edits the page and writes a scratch file of its own.
	one := harness.EditScript(p, "index.html", "<h1>Hello</h1>", "<h1>Welcome to Acme</h1>", "Done, notes in scratch.txt.")
	one.Turns = slices.Insert(one.Turns, 2, messagesapi.Turn{Tools: []messagesapi.ToolUse{{Name: "Write",
		Input: map[string]any{"file_path": filepath.Join(p.Workdir, "scratch.txt"), "content": "notes of b-left-1\n"}}}})
	p.API.Enqueue(one)
	job := env.StartBuild(t, p, "b-left-1", schema.BuildSpec{Prompt: "Change the heading to Welcome to Acme."}, harness.BuildOptions{})
	pod := env.WaitJobPod(t, job, 2*time.Minute)
	b1 := env.Dispatcher.Get("b-left-1")
	require.Len(t, b1.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
	require.True(t, b1.ResultPosts[0].Success, b1.ResultPosts[0].Error)
	require.Equal(t, []string{"index.html", "scratch.txt"}, b1.ResultPosts[0].FilesChanged)
	require.Empty(t, b1.ResultPosts[0].CommitSHA)

	// Build 2 makes the same edit: it finds "Hello" only in a reset workspace.
	p.API.Enqueue(harness.EditScript(p, "index.html", "<h1>Hello</h1>", "<h1>Welcome to Acme</h1>", "Done."))
	job = env.StartBuild(t, p, "b-left-2", schema.BuildSpec{
		Prompt: "Change the heading to Welcome to Acme.", AutoCommit: true, AutoPush: true,
	}, harness.BuildOptions{})
	pod = env.WaitJobPod(t, job, 2*time.Minute)
	b2 := env.Dispatcher.Get("b-left-2")
	require.Len(t, b2.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
	res := b2.ResultPosts[0]
	require.True(t, res.Success, res.Error)
	require.Equal(t, []string{"index.html"}, res.FilesChanged)
	require.Equal(t, res.CommitSHA, p.Git(t, p.Remote, "rev-parse", "main"))
	require.Equal(t, seed, p.Git(t, p.Remote, "rev-parse", "main^"))
	require.Equal(t, "index.html", p.Git(t, p.Remote, "show", "--format=", "--name-only", "main"), "only its own change")
	require.Equal(t, ".gitignore\nindex.html", p.Git(t, p.Remote, "ls-tree", "--name-only", "main"))

	ref := "refs/kiln/leftovers/b-left-1"
	require.Equal(t, "notes of b-left-1", p.Git(t, p.Workdir, "show", ref+":scratch.txt"))
	require.Contains(t, p.Git(t, p.Workdir, "show", ref+":index.html"), "<h1>Welcome to Acme</h1>")
	require.Equal(t, seed, p.Git(t, p.Workdir, "rev-parse", ref+"^"))
	require.Equal(t, "b-left-2", p.Git(t, p.Workdir, "config", "kiln.build"))
	var told bool
	var started, clean time.Time
	for _, e := range b2.Events() {
		if pl, err := e.Decode(); err == nil {
			l, ok := pl.(schema.LogPayload)
			switch {
			case !ok:
			case l.Level == schema.LogWarn && strings.HasPrefix(l.Message,
				"build b-left-1 left 2 uncommitted files (index.html, scratch.txt) in the workspace: kept on "+ref+" (commit "):
				told = true
			case strings.HasPrefix(l.Message, "runner started"):
				started = e.Time
			case strings.HasPrefix(l.Message, "workspace clean on main at "):
				clean = e.Time
			}
		}
	}
	require.True(t, told, "an event says what was kept, and where")
	require.False(t, clean.IsZero(), "an event says the workspace is clean")
	t.Logf("workspace prepared (fetch, leftovers kept, reset) in %s after the runner started", clean.Sub(started).Round(time.Millisecond))
}
