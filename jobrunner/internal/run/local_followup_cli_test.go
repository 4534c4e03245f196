package run

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// envExec runs requests locally with env added: the project pod's
// environment (HOME, the stand-in API's URL).
type envExec struct{ env []string }

func (e envExec) Exec(ctx context.Context, ctr podexec.Container, req podexec.Request) (int, error) {
	req.Argv = append(append([]string{"env"}, e.env...), req.Argv...)
	return localExec{}.Exec(ctx, ctr, req)
}

// A build and its follow-up with the real CLI in a local "pod": the
// follow-up finds the session, resumes it (the stand-in asserts that its
// request carries the earlier conversation), and reports the same session
// id; the follow-up of the follow-up resumes it again.
func TestLocalFollowupWithTheRealCLI(t *testing.T) {
	t.Parallel()
	bin, err := messagesapi.ClaudeBinary()
	require.NoError(t, err)
	srv := messagesapi.Start(t)
	srv.Enqueue(
		messagesapi.Script{Name: "first", Turns: []messagesapi.Turn{
			{Text: "Reading the README.", Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": "README.md"}}}},
			{Text: "The README says hello."},
		}},
		messagesapi.Script{Name: "followup", Turns: []messagesapi.Turn{{Text: "Still hello.",
			Expect: []string{"What does the README say?", "The README says hello.", "Is it still so?"}}}},
		messagesapi.Script{Name: "followup-2", Turns: []messagesapi.Turn{{Text: "Yes.",
			Expect: []string{"What does the README say?", "Still hello.", "Sure?"}}}},
		messagesapi.Script{Name: "over-budget", Turns: []messagesapi.Turn{
			{Text: "Reading it all.", Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": "README.md"}}}, Usage: messagesapi.BigUsage},
			{Text: "never"},
		}},
	)
	base, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	work, home := filepath.Join(base, "work"), filepath.Join(base, "home")
	require.NoError(t, os.MkdirAll(work, 0o755))
	require.NoError(t, os.MkdirAll(home, 0o755))
	gitIn(t, base, "init", "-q", work)
	seed(t, work)
	ex := envExec{env: append(messagesapi.CLIEnv(srv.URL(), home), "PATH="+os.Getenv("PATH"), "CLAUDE_CODE_MAX_RETRIES=0")}
	kube := fake.NewSimpleClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "proj", Name: "ws"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	})
	build := func(id, prompt string, f *schema.FollowupTask, budget ...float64) (Outcome, *memDispatcher, time.Duration) {
		d := &memDispatcher{task: schema.RunnerTask{BuildID: id, Status: schema.StatusRunning, Spec: schema.BuildSpec{Prompt: prompt},
			Target: schema.Target{Namespace: "proj", PodName: "ws", Workdir: work, GitBranch: "main"}, Followup: f}}
		cfg := Config{BuildID: id, PIDDir: base, AgentBinary: bin, KillWait: time.Second, StatusPoll: time.Second,
			TerminationLog: filepath.Join(base, id+"-termination-log"),
			Runner:         jobtemplates.RunnerConfig{Agent: jobtemplates.Agent{AllowedTools: []string{"Read"}, MaxTurns: 5}}}
		if len(budget) > 0 {
			cfg.Runner.Agent.MaxBudgetUSD = budget[0]
		}
		start := time.Now()
		out := New(cfg, d, kube, ex, slog.New(slog.NewTextHandler(io.Discard, nil))).Run(context.Background())
		return out, d, firstAgentEvent(t, d).Sub(start)
	}

	first, _, freshWait := build(testBuildID(t)+"-1", "What does the README say?", nil)
	require.True(t, first.Result.Success, first.Result.Error)
	session := first.Result.SessionID
	require.NotEmpty(t, session)

	second, d2, followWait := build(testBuildID(t)+"-2", "Is it still so?", &schema.FollowupTask{ParentID: "b-1", SessionID: session,
		ParentPrompt: "What does the README say?", ParentOutput: first.Result.Output})
	require.True(t, second.Result.Success, second.Result.Error)
	require.Equal(t, "Still hello.", second.Result.Output)
	require.Equal(t, session, second.Result.SessionID, "the CLI reports the resumed session's id")
	requireLog(t, d2, schema.LogInfo, "^follow-up of build b-1: continuing its agent session "+session+"$")

	third, _, _ := build(testBuildID(t)+"-3", "Sure?", &schema.FollowupTask{ParentID: "b-2", SessionID: second.Result.SessionID})
	require.True(t, third.Result.Success, third.Result.Error)
	require.Equal(t, "Yes.", third.Result.Output)

	// A follow-up stopped by its own budget: budget_exceeded, its own spend
	// (not the session's), and the session id to follow up again.
	fourth, _, _ := build(testBuildID(t)+"-4", "Read everything.", &schema.FollowupTask{ParentID: "b-3", SessionID: third.Result.SessionID}, 0.05)
	require.False(t, fourth.Result.Success)
	require.Equal(t, schema.ReasonBudgetExceeded, fourth.Result.Reason)
	require.Equal(t, "the agent was stopped by the build's budget of $0.05 after spending $0.12 in 1 turn", fourth.Result.Error)
	require.InDelta(t, 0.12, fourth.Result.Usage.CostUSD, 1e-9)
	require.Equal(t, session, fourth.Result.SessionID)

	var earlier []int
	for _, q := range srv.Requests() {
		if q.Kind == "turn" && q.Script != "over-budget" {
			require.Empty(t, q.Missing, "script %s turn %d", q.Script, q.Turn)
			earlier = append(earlier, q.Earlier)
		}
	}
	require.Equal(t, []int{0, 0, 2, 3}, earlier, "each follow-up's request carries the conversation before it")
	t.Logf("start to first agent event: fresh build %v, follow-up %v", freshWait, followWait)
}

// firstAgentEvent is when the build's first agent event ("agent session
// started") was made.
func firstAgentEvent(t *testing.T, d *memDispatcher) time.Time {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.events {
		if l, ok := decodeLog(e); ok && l.AgentVersion != "" {
			return e.Time
		}
	}
	t.Fatal("no agent session started event")
	return time.Time{}
}
