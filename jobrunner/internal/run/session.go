package run

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/jobrunner/internal/agent"
	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/jobrunner/internal/prompt"
	"github.com/kilnbuild/kiln/schema"
)

// followupPlan is how a follow-up's agent starts.
type followupPlan struct {
	// Resume is the session to continue; "" starts a fresh session.
	Resume string
	// Earlier is the earlier build, the context of a fresh session.
	Earlier *prompt.Earlier
	// Message says which way it went (a log event).
	Message string
}

// sessionUnavailable is why a follow-up cannot run: the build fails with
// schema.ReasonSessionUnavailable and this text.
type sessionUnavailable struct{ msg string }

func (e *sessionUnavailable) Error() string { return e.msg }

// Session states as the pod check found them.
type sessionState int

const (
	// sessionNone: the earlier build has no session id (it never started the agent).
	sessionNone sessionState = iota
	// sessionMissing: the session's file is not in the workspace pod.
	sessionMissing
	// sessionPresent: the session's file is there; it can be resumed.
	sessionPresent
)

// planFollowup decides how follow-up f starts, given what the pod check
// found. A present session is resumed whatever the fallback (fresh is only a
// fallback); otherwise fallback fresh starts a new session with the earlier
// build's prompt and output as context, and no fallback is an error.
func planFollowup(f *schema.FollowupTask, state sessionState) (followupPlan, error) {
	const ask = "ask for fallback fresh to start a new one"
	switch {
	case state == sessionPresent:
		return followupPlan{Resume: f.SessionID,
			Message: fmt.Sprintf("follow-up of build %s: continuing its agent session %s", f.ParentID, f.SessionID)}, nil
	case f.Fallback != schema.FallbackFresh && state == sessionNone:
		return followupPlan{}, &sessionUnavailable{fmt.Sprintf(
			"build %s never started the agent: no session to continue; %s", f.ParentID, ask)}
	case f.Fallback != schema.FallbackFresh:
		return followupPlan{}, &sessionUnavailable{fmt.Sprintf(
			"the agent session %s of build %s is not in the workspace (the pod was replaced): it cannot be continued; %s",
			f.SessionID, f.ParentID, ask)}
	}
	why := fmt.Sprintf("build %s never started the agent", f.ParentID)
	if state == sessionMissing {
		why = fmt.Sprintf("the agent session %s of build %s is not in the workspace", f.SessionID, f.ParentID)
	}
	return followupPlan{
		Earlier: &prompt.Earlier{BuildID: f.ParentID, Prompt: f.ParentPrompt, Output: f.ParentOutput},
		Message: why + ": starting a new session with the earlier build's prompt and output as context (fallback fresh)",
	}, nil
}

// planFollowup checks the follow-up's session in the pod (one exec) and
// decides how its agent starts, telling it in an event.
func (r *Runner) planFollowup(ctx context.Context, ctr podexec.Container, f *schema.FollowupTask) (followupPlan, error) {
	state, err := r.checkSession(ctx, ctr, f)
	if err != nil {
		return followupPlan{}, err
	}
	plan, err := planFollowup(f, state)
	if err != nil {
		return followupPlan{}, err
	}
	r.log.Info("follow-up", "parent", f.ParentID, "resume", plan.Resume)
	r.event(schema.LogPayload{Level: schema.LogInfo, Message: plan.Message, SessionID: plan.Resume})
	return plan, nil
}

// agentCommand renders the prompt (the template's preamble, the limits,
// for a fresh follow-up session the earlier build, the spec's prompt) and
// the agent's command, resuming plan.Resume when set.
func (r *Runner) agentCommand(adapter agent.Adapter, task schema.RunnerTask, buildID string, plan followupPlan) (agent.Command, error) {
	limits := r.agentLimits(buildID)
	text, err := prompt.Compose(prompt.Parts{Preamble: r.cfg.Runner.PromptPreamble, Prompt: task.Spec.Prompt,
		Variables: task.Spec.Variables, Limits: &limits, Earlier: plan.Earlier})
	if err != nil {
		return agent.Command{}, err
	}
	ag := r.cfg.Runner.Agent
	cmd, err := adapter.Command(agent.Settings{
		Prompt: text, Model: ag.Model, MaxTurns: ag.MaxTurns, AllowedTools: ag.AllowedTools,
		DisallowedTools: ag.DisallowedTools, PermissionMode: ag.PermissionMode,
		MaxBudgetUSD: ag.MaxBudgetUSD, Resume: plan.Resume,
	})
	if err != nil {
		return agent.Command{}, fmt.Errorf("agent settings: %w", err)
	}
	return cmd, nil
}

// sessionCheckTimeout bounds the session check's exec.
const sessionCheckTimeout = 30 * time.Second

// SessionCheckScript is the POSIX sh script that finds the file of Claude
// Code session id in the pod: $CLAUDE_CONFIG_DIR (default $HOME/.claude)
// /projects/<project folder>/<id>.jsonl. It prints the path and exits 0
// when there is one, exits 1 when there is none. id must be a session id
// (agent.IsSessionID): it is put in the script as it is.
func SessionCheckScript(id string) string {
	return fmt.Sprintf(`d="${CLAUDE_CONFIG_DIR:-$HOME/.claude}/projects"
for f in "$d"/*/%s.jsonl; do
  [ -f "$f" ] && { echo "$f"; exit 0; }
done
exit 1
`, id)
}

// checkSession finds, with one exec, whether the session of f is in the pod.
func (r *Runner) checkSession(ctx context.Context, ctr podexec.Container, f *schema.FollowupTask) (sessionState, error) {
	if f.SessionID == "" {
		return sessionNone, nil
	}
	if !agent.IsSessionID(f.SessionID) {
		return sessionNone, &sessionUnavailable{fmt.Sprintf("the session id of build %s, %q, is not a UUID: it cannot be continued", f.ParentID, f.SessionID)}
	}
	ctx, cancel := context.WithTimeout(ctx, sessionCheckTimeout)
	defer cancel()
	out := &tailBuffer{max: 4 << 10}
	code, err := r.exec.Exec(ctx, ctr, podexec.Request{
		Argv: []string{"sh", "-c", SessionCheckScript(f.SessionID)}, Stdout: out, Stderr: out,
	})
	switch {
	case err != nil:
		return sessionNone, fmt.Errorf("checking the agent session %s in the pod: %w", f.SessionID, err)
	case code == 0:
		r.log.Info("agent session found", "session", f.SessionID, "file", strings.TrimSpace(out.String()))
		return sessionPresent, nil
	case code == 1:
		return sessionMissing, nil
	}
	return sessionNone, fmt.Errorf("checking the agent session %s in the pod: exit %d: %s", f.SessionID, code, lastLines(out.String(), 3))
}

// agentLimits is what the agent is told of its limits: the time the runner
// gives it (runAgent's deadline), its turns and budget, and the branch
// that keeps its work if a limit stops it.
func (r *Runner) agentLimits(buildID string) prompt.Limits {
	return prompt.Limits{
		Time:           agentTime(r.cfg.Runner.DeadlineSeconds, r.cfg.Runner.GracePeriodSeconds),
		MaxTurns:       cmp.Or(r.cfg.Runner.Agent.MaxTurns, agent.DefaultMaxTurns),
		MaxBudgetUSD:   r.cfg.Runner.Agent.MaxBudgetUSD,
		KeptWorkBranch: schema.KeptWorkBranch(buildID),
	}
}

// agentTime is how long the runner lets the agent run in a build with this
// deadline and grace period (seconds): the deadline less the grace period
// and a 10 s margin to report; 0 when there is no deadline.
func agentTime(deadline, grace int64) time.Duration {
	if deadline <= 0 {
		return 0
	}
	return max(time.Duration(deadline-grace)*time.Second-10*time.Second, 0)
}
