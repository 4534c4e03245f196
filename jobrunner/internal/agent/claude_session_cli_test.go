package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// The tests here run the real, pinned Claude Code CLI (make claude-code)
// against the stand-in Messages API, with the argv Claude.Command builds:
// what a run stopped by --max-budget-usd reports, and what --resume does.
// docs/agent.md ("Budgets and resumed sessions") records what they found.

// cliRun is one finished run of the real CLI.
type realRun struct {
	outcome Outcome
	events  []Event
	exit    int
}

// runReal runs the pinned CLI in dir with home as its HOME, with the argv
// of s, and summarizes its output.
func runReal(t *testing.T, srv *messagesapi.Server, dir, home string, s Settings) realRun {
	t.Helper()
	bin, err := messagesapi.ClaudeBinary()
	require.NoError(t, err)
	cmd, err := Claude{Binary: bin}.Command(s)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Argv[0], cmd.Argv[1:]...)
	c.Dir = dir
	c.Env = append([]string{"PATH=" + os.Getenv("PATH"), "CLAUDE_CODE_MAX_RETRIES=0"}, messagesapi.CLIEnv(srv.URL(), home)...)
	c.Stdin = bytes.NewReader(cmd.Stdin)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err = c.Run()
	r := realRun{}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		r.exit = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running the CLI: %v", err)
	}
	require.NoError(t, Stream(bytes.NewReader(stdout.Bytes()), Claude{}.NewParser(), func(e Event) error {
		r.events = append(r.events, e)
		return nil
	}))
	r.outcome = Summarize(r.events)
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	t.Logf("CLI exit %d, outcome %+v, stderr %q, last line %s", r.exit, r.outcome, stderr.String(), lines[len(lines)-1])
	return r
}

// workdir is a git repository holding README.md, with a HOME beside it.
func workdir(t *testing.T) (dir, home string) {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	dir, home = filepath.Join(base, "work"), filepath.Join(base, "home")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.MkdirAll(home, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("# Acme\n"), 0o644))
	out, err := exec.Command("git", "-C", dir, "init", "-q").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return dir, home
}

func readTurn(text string, u messagesapi.Usage) messagesapi.Turn {
	return messagesapi.Turn{Text: text, Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": "README.md"}}}, Usage: u}
}

// A run stopped by --max-budget-usd: the CLI checks the budget after each
// turn, so the turn that passes it is paid for, its tool is not run, and the
// result says error_max_budget_usd with the whole cost.
func TestClaudeCLIBudgetStop(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "budget", Turns: []messagesapi.Turn{
		readTurn("Reading the README.", messagesapi.Usage{}),
		readTurn("Reading it again.", messagesapi.BigUsage),
		readTurn("And again.", messagesapi.BigUsage),
		{Text: "Done."},
	}})
	dir, home := workdir(t)
	r := runReal(t, srv, dir, home, Settings{Prompt: "Read the README.\n", AllowedTools: []string{"Read"}, MaxTurns: 10, MaxBudgetUSD: 0.05})

	o := r.outcome
	require.Equal(t, 1, r.exit)
	require.False(t, o.Success)
	require.Equal(t, SubtypeMaxBudget, o.Subtype)
	require.Equal(t, schema.ReasonBudgetExceeded, o.Reason)
	require.Greater(t, o.CostUSD, 0.05, "the turn that passed the budget is paid for")
	require.Equal(t, 2, o.Turns)
	require.Equal(t, "the agent was stopped by the build's budget of $0.05 after spending "+USD(o.CostUSD)+" in 2 turns", o.Error)
	require.GreaterOrEqual(t, o.InputTokens, int64(messagesapi.BigUsage.InputTokens))
	turns := 0
	for _, q := range srv.Requests() {
		if q.Kind == "turn" {
			turns++
		}
	}
	require.Equal(t, 2, turns, "no request after the budget was passed")
	var results int
	for _, e := range r.events {
		if e.Kind == KindToolResult {
			results++
		}
	}
	require.Equal(t, 1, results, "the second turn's tool call was not run")
}

// --resume: the new run sends the earlier conversation (the stand-in's
// Expect asserts it, naming what is missing otherwise), keeps the session
// id, and continues the session file under $HOME/.claude/projects. The
// CLI's total_cost_usd is the session's, the earlier run's included; the
// outcome's cost and turns are the run's own.
func TestClaudeCLIResume(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(
		messagesapi.Script{Name: "first", Turns: []messagesapi.Turn{readTurn("Reading the README.", messagesapi.Usage{}), {Text: "The README says Acme."}}},
		messagesapi.Script{Name: "followup", Turns: []messagesapi.Turn{{
			Text:   "Continuing: the title stays Acme.",
			Expect: []string{"What does the README say?", "The README says Acme.", "# Acme", "Now keep the title."},
		}}},
		messagesapi.Script{Name: "lacking", Turns: []messagesapi.Turn{{Text: "never", Expect: []string{"a text no one wrote"}}}},
	)
	dir, home := workdir(t)
	settings := Settings{Prompt: "What does the README say?\n", AllowedTools: []string{"Read"}, MaxTurns: 10}
	first := runReal(t, srv, dir, home, settings)
	require.True(t, first.outcome.Success, first.outcome.Error)
	id := first.outcome.SessionID
	require.True(t, IsSessionID(id), id)

	// The session file: $HOME/.claude/projects/<cwd, each / and . as ->/<id>.jsonl.
	project := strings.NewReplacer("/", "-", ".", "-").Replace(dir)
	file := filepath.Join(home, ".claude", "projects", project, id+".jsonl")
	require.FileExists(t, file)
	found, err := filepath.Glob(filepath.Join(home, ".claude", "projects", "*", id+".jsonl"))
	require.NoError(t, err)
	require.Equal(t, []string{file}, found)

	settings.Prompt, settings.Resume = "Now keep the title.\n", id
	second := runReal(t, srv, dir, home, settings)
	require.True(t, second.outcome.Success, second.outcome.Error)
	require.Equal(t, "Continuing: the title stays Acme.", second.outcome.Output)
	require.Equal(t, id, second.outcome.SessionID, "a resumed run keeps the session id")
	require.Equal(t, id, second.events[0].Init.SessionID)
	require.Equal(t, 1, second.outcome.Turns, "turns are the run's own")
	require.InDelta(t, first.outcome.CostUSD/2, second.outcome.CostUSD, 1e-9,
		"the cost is the run's own (one turn), not the session's (the CLI's total_cost_usd, three turns)")
	f := second.events[len(second.events)-1].Final
	require.InDelta(t, first.outcome.CostUSD*3/2, f.TotalCostUSD, 1e-9, "the CLI's total is the session's")

	var resumed []messagesapi.Request
	for _, q := range srv.Requests() {
		if q.Kind == "turn" && q.Script == "followup" {
			resumed = append(resumed, q)
		}
	}
	require.Len(t, resumed, 1)
	require.Equal(t, 0, resumed[0].Turn)
	require.Equal(t, 2, resumed[0].Earlier, "the request carries the earlier run's two answers")
	require.Equal(t, "Now keep the title.\n", resumed[0].Prompt)
	require.Equal(t, id, resumed[0].SessionID)
	require.Empty(t, resumed[0].Missing)

	// A follow-up whose conversation lacks what the script expects fails at
	// once, naming the missing text.
	settings.Prompt = "And the footer.\n"
	third := runReal(t, srv, dir, home, settings)
	require.False(t, third.outcome.Success)
	require.Equal(t, schema.ReasonAgentBadRequest, third.outcome.Reason)
	require.Contains(t, third.outcome.Error, `400 invalid_request_error: stand-in Messages API: the conversation does not contain "a text no one wrote"`)

	// An unknown session: the CLI refuses it.
	settings.Resume = "00000000-0000-4000-8000-000000000001"
	unknown := runReal(t, srv, dir, home, settings)
	require.False(t, unknown.outcome.Success)
	t.Logf("resuming an unknown session: exit %d, %q", unknown.exit, unknown.outcome.Error)
}

// The budget of a resumed run is the run's own: the CLI does not count the
// session's earlier spend against --max-budget-usd. The earlier run spent
// $0.12; the follow-up's two cheap turns ($0.0012) pass a $0.10 budget.
func TestClaudeCLIResumeBudget(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(
		messagesapi.Script{Name: "first", Turns: []messagesapi.Turn{{Text: "Big answer.", Usage: messagesapi.BigUsage}}},
		messagesapi.Script{Name: "followup", Turns: []messagesapi.Turn{readTurn("Small answer.", messagesapi.Usage{}), {Text: "Smaller."}}},
		messagesapi.Script{Name: "over", Turns: []messagesapi.Turn{readTurn("Big again.", messagesapi.BigUsage), {Text: "never"}}},
	)
	dir, home := workdir(t)
	first := runReal(t, srv, dir, home, Settings{Prompt: "Say something.\n", AllowedTools: []string{"Read"}})
	require.True(t, first.outcome.Success, first.outcome.Error)
	require.InDelta(t, 0.12, first.outcome.CostUSD, 1e-9)

	resume := Settings{Prompt: "Say more.\n", AllowedTools: []string{"Read"}, MaxBudgetUSD: 0.10, Resume: first.outcome.SessionID}
	second := runReal(t, srv, dir, home, resume)
	require.True(t, second.outcome.Success, second.outcome.Error)
	require.Equal(t, 2, second.outcome.Turns)
	require.InDelta(t, 0.0012, second.outcome.CostUSD, 1e-9)

	// Its own spend past the budget stops it, and the error names its own spend.
	resume.Prompt = "Say a lot.\n"
	third := runReal(t, srv, dir, home, resume)
	require.Equal(t, schema.ReasonBudgetExceeded, third.outcome.Reason)
	require.InDelta(t, 0.12, third.outcome.CostUSD, 1e-9)
	require.Equal(t, "the agent was stopped by the build's budget of $0.10 after spending $0.12 in 1 turn", third.outcome.Error)
}
