package run

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// homeExec runs requests locally with HOME set: the project pod's user,
// whose $HOME/.claude holds the agent's sessions.
type homeExec struct {
	home  string
	mu    *sync.Mutex
	execs *[]string // the scripts run, in order
}

func (h homeExec) Exec(ctx context.Context, ctr podexec.Container, req podexec.Request) (int, error) {
	h.mu.Lock()
	*h.execs = append(*h.execs, req.Argv[len(req.Argv)-1])
	h.mu.Unlock()
	req.Argv = append([]string{"env", "HOME=" + h.home}, req.Argv...)
	return localExec{}.Exec(ctx, ctr, req)
}

const parentSession = "3f2b9c1e-8a4d-4e6f-9b0c-1d2e3f4a5b6c"

// followupSetup is setupLocal for a follow-up: its pod's HOME, an agent
// that records its argv and its prompt, and a scratch file in the
// workspace that preparing the workspace would move away.
type followupSetup struct {
	r       *Runner
	d       *memDispatcher
	home    string
	work    string
	argv    string // where the agent writes its argv, one per line
	stdin   string // where it writes its prompt
	execs   []string
	scratch string
}

func setupFollowup(t *testing.T, rc jobtemplates.RunnerConfig, f schema.FollowupTask) *followupSetup {
	t.Helper()
	r, d, dir := setupLocal(t, rc, "0")
	s := &followupSetup{r: r, d: d, home: filepath.Join(dir, "home"), work: d.task.Target.Workdir,
		argv: filepath.Join(dir, "argv"), stdin: filepath.Join(dir, "stdin")}
	require.NoError(t, os.MkdirAll(s.home, 0o755))
	r.exec = homeExec{home: s.home, mu: &sync.Mutex{}, execs: &s.execs}
	require.NoError(t, os.WriteFile(r.cfg.AgentBinary, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > "+s.argv+
		"\ncat > "+s.stdin+"\ncat "+fixturePath(t)+"\n"), 0o755))
	seed(t, s.work)
	d.task.Target.GitBranch = "main"
	s.scratch = filepath.Join(s.work, "scratch.txt")
	require.NoError(t, os.WriteFile(s.scratch, []byte("left by the parent\n"), 0o644))
	d.task.Spec.Prompt = "Now the footer."
	d.task.Followup = &f
	return s
}

// session puts the parent's session file where Claude Code keeps it.
func (s *followupSetup) session(t *testing.T, id string) {
	t.Helper()
	dir := filepath.Join(s.home, ".claude", "projects", strings.ReplaceAll(s.work, "/", "-"))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, id+".jsonl"), []byte("{}\n"), 0o644))
}

func (s *followupSetup) agentArgv(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(s.argv)
	require.NoError(t, err, "the agent ran")
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (s *followupSetup) prompt(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(s.stdin)
	require.NoError(t, err, "the agent ran")
	return string(b)
}

func flagValue(argv []string, flag string) (string, bool) {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1], true
		}
	}
	return "", false
}

// A follow-up whose session cannot be continued fails fast, with one exec
// (the session check), before the workspace is touched: the agent never
// runs, the parent's scratch file stays where it was.
func TestLocalFollowupSessionUnavailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		session string
		err     string
		execs   int
	}{
		{"never started the agent", "", "build b-parent never started the agent: no session to continue; ask for fallback fresh to start a new one", 0},
		{"not in the pod", parentSession, "the agent session " + parentSession + " of build b-parent is not in the workspace (the pod was replaced): it cannot be continued; ask for fallback fresh to start a new one", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := setupFollowup(t, jobtemplates.RunnerConfig{}, schema.FollowupTask{ParentID: "b-parent", SessionID: tt.session,
				ParentPrompt: "Change the heading.", ParentOutput: "Done."})
			s.session(t, "00000000-0000-4000-8000-000000000009") // another session is there
			out := s.r.Run(context.Background())
			require.True(t, out.Reported)
			require.False(t, out.Result.Success)
			require.Equal(t, schema.ReasonSessionUnavailable, out.Result.Reason)
			require.Equal(t, tt.err, out.Result.Error)
			require.Len(t, s.execs, tt.execs, "the session check is one exec, and nothing else ran")
			require.NoFileExists(t, s.argv, "the agent did not run")
			b, err := os.ReadFile(s.scratch)
			require.NoError(t, err, "the workspace was not prepared")
			require.Equal(t, "left by the parent\n", string(b))
			for _, l := range logs(s.d) {
				require.NotContains(t, l.Message, "workspace clean")
			}
		})
	}
}

// Fallback fresh with no session to continue: a new session whose prompt
// gives the earlier build's prompt and output as context, then the new
// prompt; an event says so.
func TestLocalFollowupFresh(t *testing.T) {
	t.Parallel()
	for name, session := range map[string]string{"not in the pod": parentSession, "never started": ""} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := setupFollowup(t, jobtemplates.RunnerConfig{PromptPreamble: "You work on the Acme site."}, schema.FollowupTask{
				ParentID: "b-parent", SessionID: session, Fallback: schema.FallbackFresh,
				ParentPrompt: "Change the heading to {{ title }}.", ParentOutput: "The heading now says Welcome."})
			out := s.r.Run(context.Background())
			require.True(t, out.Result.Success, out.Result.Error)
			_, resumed := flagValue(s.agentArgv(t), "--resume")
			require.False(t, resumed, "a new session")
			p := s.prompt(t)
			for _, want := range []string{"You work on the Acme site.", "Limits of this run:", `<earlier-build id="b-parent">`,
				"<earlier-prompt>\nChange the heading to {{ title }}.\n</earlier-prompt>",
				"<earlier-output>\nThe heading now says Welcome.\n</earlier-output>", "Now the footer."} {
				require.Contains(t, p, want)
			}
			require.Less(t, strings.Index(p, "</earlier-build>"), strings.Index(p, "Now the footer."), "the new prompt comes last")
			requireLog(t, s.d, schema.LogInfo, `^(the agent session `+session+` of build b-parent is not in the workspace|build b-parent never started the agent): starting a new session with the earlier build's prompt and output as context \(fallback fresh\)$`)
			require.Equal(t, "00000000-0000-4000-8000-000000000001", out.Result.SessionID, "the new session's id, as the CLI reports it")
		})
	}
}

// A session in the pod is resumed, whatever the fallback; the prompt is the
// new one, without the earlier build (the session holds it).
func TestLocalFollowupResumes(t *testing.T) {
	t.Parallel()
	for _, fallback := range []schema.Fallback{schema.FallbackNone, schema.FallbackFresh} {
		t.Run("fallback "+cmp.Or(string(fallback), "none"), func(t *testing.T) {
			t.Parallel()
			s := setupFollowup(t, jobtemplates.RunnerConfig{}, schema.FollowupTask{ParentID: "b-parent", SessionID: parentSession,
				Fallback: fallback, ParentPrompt: "Change the heading.", ParentOutput: "Done."})
			s.session(t, parentSession)
			out := s.r.Run(context.Background())
			require.True(t, out.Result.Success, out.Result.Error)
			id, ok := flagValue(s.agentArgv(t), "--resume")
			require.True(t, ok, "argv %q", s.agentArgv(t))
			require.Equal(t, parentSession, id)
			p := s.prompt(t)
			require.NotContains(t, p, "earlier-build")
			require.True(t, strings.HasSuffix(p, "Now the footer."), p)
			l := requireLog(t, s.d, schema.LogInfo, `^follow-up of build b-parent: continuing its agent session `+parentSession+`$`)
			require.Equal(t, parentSession, l.SessionID)
			require.Equal(t, SessionCheckScript(parentSession), s.execs[0], "the session check comes first")
			b, err := os.ReadFile(s.scratch)
			require.True(t, os.IsNotExist(err), "the workspace was prepared after the check: %s", b)
		})
	}
}

// The agent's argv carries the build's turn and budget limits, and its
// prompt tells it its limits and where its work is kept.
func TestLocalLimitsReachTheAgent(t *testing.T) {
	t.Parallel()
	rc := jobtemplates.RunnerConfig{DeadlineSeconds: 1800, GracePeriodSeconds: 30, PromptPreamble: "Preamble.",
		Agent: jobtemplates.Agent{MaxTurns: 12, MaxBudgetUSD: 0.75}}
	s := setupFollowup(t, rc, schema.FollowupTask{})
	s.d.task.Followup = nil
	out := s.r.Run(context.Background())
	require.True(t, out.Result.Success, out.Result.Error)
	argv := s.agentArgv(t)
	turns, _ := flagValue(argv, "--max-turns")
	budget, _ := flagValue(argv, "--max-budget-usd")
	require.Equal(t, []string{"12", "0.75"}, []string{turns, budget})
	_, resumed := flagValue(argv, "--resume")
	require.False(t, resumed)
	p := s.prompt(t)
	require.True(t, strings.HasPrefix(p, "Preamble.\n\nLimits of this run:\n- time: 29 minutes; then you are stopped\n- turns: at most 12\n- budget: at most $0.75 of model usage\n"), p)
	require.Contains(t, p, "committed to the branch "+schema.KeptWorkBranch(s.r.cfg.BuildID)+",")
}

func TestPlanFollowup(t *testing.T) {
	t.Parallel()
	f := func(session string, fb schema.Fallback) *schema.FollowupTask {
		return &schema.FollowupTask{ParentID: "p", SessionID: session, Fallback: fb, ParentPrompt: "pp", ParentOutput: "po"}
	}
	earlier := &struct{}{}
	tests := []struct {
		name    string
		f       *schema.FollowupTask
		state   sessionState
		resume  string
		earlier *struct{}
		err     string
	}{
		{"present", f(parentSession, ""), sessionPresent, parentSession, nil, ""},
		{"present, fresh is only a fallback", f(parentSession, schema.FallbackFresh), sessionPresent, parentSession, nil, ""},
		{"missing", f(parentSession, ""), sessionMissing, "", nil, "not in the workspace (the pod was replaced)"},
		{"missing, fresh", f(parentSession, schema.FallbackFresh), sessionMissing, "", earlier, ""},
		{"none", f("", ""), sessionNone, "", nil, "never started the agent"},
		{"none, fresh", f("", schema.FallbackFresh), sessionNone, "", earlier, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			plan, err := planFollowup(tt.f, tt.state)
			if tt.err != "" {
				var su *sessionUnavailable
				require.ErrorAs(t, err, &su)
				require.Contains(t, su.msg, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.resume, plan.Resume)
			require.Equal(t, tt.earlier != nil, plan.Earlier != nil)
			if plan.Earlier != nil {
				require.Equal(t, "pp", plan.Earlier.Prompt)
				require.Equal(t, "po", plan.Earlier.Output)
			}
			require.NotEmpty(t, plan.Message)
		})
	}
}

// A session id that is not a UUID never reaches the pod's shell.
func TestCheckSessionRefusesBadIDs(t *testing.T) {
	t.Parallel()
	s := setupFollowup(t, jobtemplates.RunnerConfig{}, schema.FollowupTask{ParentID: "p", SessionID: `x"; rm -rf / #`})
	out := s.r.Run(context.Background())
	require.False(t, out.Result.Success)
	require.Equal(t, schema.ReasonSessionUnavailable, out.Result.Reason)
	require.Equal(t, `the session id of build p, "x\"; rm -rf / #", is not a UUID: it cannot be continued`, out.Result.Error)
	require.Empty(t, s.execs)
}

func TestAgentTime(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		deadline, grace int64
		want            time.Duration
	}{
		{0, 30, 0}, {1800, 30, 1760 * time.Second}, {12, 1, time.Second}, {30, 30, 0},
	} {
		require.Equal(t, tt.want, agentTime(tt.deadline, tt.grace), "%d %d", tt.deadline, tt.grace)
	}
}
