package runner_e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

func TestMain(m *testing.M) {
	// Keep every host path the pods use out of /tmp: the runner's pod mounts
	// an emptyDir on /tmp, and kubebox resolves bind-mount sources (the
	// termination-log file, the service-account token, the executable)
	// after mounting it, so sources under /tmp would be hidden.
	tmp, err := os.MkdirTemp("/var/tmp", "kiln-runner-e2e-")
	if err != nil {
		panic(err)
	}
	os.Setenv("TMPDIR", tmp)
	code := m.Run()
	if code == 0 {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// TestRunner runs the real jobrunner as a kubebox Job against a stand-in
// dispatcher, one cluster for all cases.
func TestRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("kubebox end-to-end")
	}
	env := harness.Setup(t)

	t.Run("success commits and pushes", func(t *testing.T) {
		t.Parallel()
		testSuccess(t, env)
	})
}

func testSuccess(t *testing.T, env *harness.Env) {
	p := env.NewProject(t, "ok", harness.ProjectOptions{})
	id := "b-success-1"
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB: far beyond argv comfort
	spec := schema.BuildSpec{
		Prompt:     "Change the heading for {{ ticket }}.\nfake-claude:transcript=success-edit fake-claude:run=ok fake-claude:bigline=200000\n{{ context }}",
		Variables:  map[string]string{"ticket": "ACME-42", "context": big},
		AutoCommit: true, AutoPush: true,
	}
	start := time.Now()
	job := env.StartBuild(t, p, id, spec, harness.BuildOptions{})
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

	// Every BuildResult field.
	require.True(t, res.Success, res.Error)
	require.Empty(t, res.Error)
	require.False(t, res.Cancelled)
	require.Equal(t, `Updated the heading in index.html to "Welcome to Acme".`, res.Output)
	require.Equal(t, []string{"index.html"}, res.FilesChanged)
	require.Len(t, res.CommitSHA, 40)
	require.Positive(t, res.DurationMS)
	require.Less(t, res.DurationMS, elapsed.Milliseconds()+1)
	require.NotNil(t, res.Artifacts)
	require.Empty(t, res.Artifacts)
	require.Equal(t, &schema.Usage{CostUSD: 0.0387, Turns: 3, InputTokens: 16 + 5120 + 10480, OutputTokens: 175}, res.Usage)

	// The commit is in the remote, with the right author, message, trailer and files.
	remote := p.Remote
	require.Equal(t, res.CommitSHA, p.Git(t, remote, "rev-parse", "main"))
	require.Equal(t, "Kiln Bot <bot@kiln.example>|Kiln Bot <bot@kiln.example>", p.Git(t, remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main"))
	require.Equal(t, "Kiln build "+id, p.Git(t, remote, "log", "-1", "--format=%s", "main"))
	require.Equal(t, id, p.Git(t, remote, "log", "-1", "--format=%(trailers:key=Kiln-Build-Id,valueonly)", "main"))
	require.Contains(t, p.Git(t, remote, "log", "-1", "--format=%b", "main"), "Change the heading for {{ ticket }}.")
	require.Equal(t, "index.html", p.Git(t, remote, "show", "--format=", "--name-only", "main"))
	require.Contains(t, p.Git(t, remote, "show", "main:index.html"), "<h1>Welcome to Acme</h1>")

	// The prompt went on stdin, whole and rendered; argv holds no prompt and no skip-permissions.
	got, err := os.ReadFile(filepath.Join(p.State, "ok.prompt"))
	require.NoError(t, err)
	require.Contains(t, string(got), "You are working in a git repository") // the template's preamble
	require.Contains(t, string(got), "Change the heading for ACME-42.")
	require.True(t, strings.HasSuffix(string(got), big))
	var argv []string
	argsJSON, err := os.ReadFile(filepath.Join(p.State, "ok.args.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(argsJSON, &argv))
	require.Contains(t, argv, "--verbose")
	require.Contains(t, argv, "Bash(git push:*)")
	for _, a := range argv {
		require.NotContains(t, a, "dangerously")
		require.Less(t, len(a), 1000)
	}

	// Events: ordered batches 1..n, none stored twice, the agent's story in order.
	requireBatches(t, b)
	var kinds []string
	var sawBig bool
	for _, e := range b.Events() {
		kinds = append(kinds, string(e.Type))
		if e.Type == schema.EventAgentText && len(e.Payload) > 200000 {
			sawBig = true
		}
	}
	require.True(t, sawBig, "a 200 KB output line arrived whole")
	require.Equal(t, []string{"log", "agent_text", "log", "agent_text", "tool_call", "tool_result", "tool_call", "tool_result",
		"agent_text", "usage", "log", "git", "log"}, kinds)
	var git struct {
		FilesChanged []string `json:"files_changed"`
		CommitSHA    string   `json:"commit_sha"`
		Pushed       bool     `json:"pushed"`
	}
	for _, e := range b.Events() {
		if e.Type == schema.EventGit {
			require.NoError(t, json.Unmarshal(e.Payload, &git))
		}
	}
	require.Equal(t, res.CommitSHA, git.CommitSHA)
	require.True(t, git.Pushed)
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

var (
	_ = context.Background
	_ = strconv.Itoa
	_ = syscall.Kill
	_ = metav1.DeletePropagationBackground
	_ = ptr.To[int]
)
