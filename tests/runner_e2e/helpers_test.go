package runner_e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/messagesapi"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

// loopScript is a committed test script a Bash tool call runs: it writes
// its pid to $1, ignores SIGTERM and loops until killed (the CLI refuses a
// standalone long sleep, not a script that sleeps a second at a time).
const loopScript = `#!/bin/sh
trap '' TERM
echo $$ > "$1"
while :; do sleep 1; done
`

// loopBashScript is a model that runs tools/loop.sh (see loopScript) with
// the Bash tool, writing its pid to pidFile.
func loopBashScript(pidFile string) messagesapi.Script {
	return messagesapi.Script{Name: "loop", Turns: []messagesapi.Turn{
		{Text: "Running the soak test.", Tools: []messagesapi.ToolUse{{Name: "Bash",
			Input: map[string]any{"command": "tools/loop.sh " + pidFile, "description": "Run the soak test"}}}},
		{Text: "done"}}}
}

// scriptTokens sums a script's input (or output) tokens as the stand-in reports them.
func scriptTokens(s messagesapi.Script, input bool) int {
	n := 0
	for _, t := range s.Turns {
		u := t.Usage
		if u == (messagesapi.Usage{}) {
			u = messagesapi.Usage{InputTokens: 100, OutputTokens: 10}
		}
		if input {
			n += u.InputTokens
		} else {
			n += u.OutputTokens
		}
	}
	return n
}

// turns are the requests that were agent turns.
func turns(reqs []messagesapi.Request) []messagesapi.Request {
	var out []messagesapi.Request
	for _, r := range reqs {
		if r.Kind == "turn" {
			out = append(out, r)
		}
	}
	return out
}

// defaultTemplate is the embedded default template with a 20 s grace period.
func defaultTemplate(t *testing.T) *jobtemplates.Template {
	t.Helper()
	tmpl, ok := jobtemplates.Embedded().Get("default")
	require.True(t, ok)
	tmpl.TerminationGracePeriodSeconds = 20
	return tmpl
}

// bashTemplate is defaultTemplate granting the agent these Bash rules too:
// a test template, as a project would add for its own scripts.
func bashTemplate(t *testing.T, rules ...string) *jobtemplates.Template {
	tmpl := defaultTemplate(t)
	tmpl.Agent.AllowedTools = slices.Concat(tmpl.Agent.AllowedTools, rules)
	return tmpl
}

// describe is an event in one line: its type, then the tool of a tool
// call or the message of a log line.
func describe(e schema.EventInput) string {
	p, err := e.Decode()
	if err != nil {
		return string(e.Type) + " " + string(e.Payload)
	}
	switch p := p.(type) {
	case schema.ToolCallPayload:
		return string(e.Type) + " " + p.Name
	case schema.LogPayload:
		return string(e.Type) + " " + p.Message
	}
	return string(e.Type)
}

// requireInOrder checks the events hold, in this order (others may come
// between), an event matching each of want: a description (see describe)
// starting with it.
func requireInOrder(t *testing.T, events []schema.EventInput, want ...string) {
	t.Helper()
	var all []string
	for _, e := range events {
		all = append(all, describe(e))
	}
	i := 0
	for _, d := range all {
		if i < len(want) && strings.HasPrefix(d, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("events lack %q (after %q) in order; they are:\n%s", want[i], want[:i], strings.Join(all, "\n"))
	}
}

// waitStall waits until the CLI waits on a stalled answer, and returns
// the agent's processes then.
func waitStall(t *testing.T, p *harness.Project, before []int) []int {
	t.Helper()
	kbtest.WaitFor(t, 90*time.Second, "the CLI waiting for a stalled answer", func(context.Context) (bool, error) {
		return slices.ContainsFunc(p.API.Requests(), func(r messagesapi.Request) bool { return r.Stalled && r.InFlight }), nil
	})
	running := p.AgentProcs(before)
	require.NotEmpty(t, running, "the agent's processes")
	return running
}

// requireStalledCut checks the stalled request ended because the CLI went
// away, not because it was answered.
func requireStalledCut(t *testing.T, p *harness.Project) {
	t.Helper()
	kbtest.WaitFor(t, 10*time.Second, "the stalled request to end", func(context.Context) (bool, error) {
		return !slices.ContainsFunc(p.API.Requests(), func(r messagesapi.Request) bool { return r.InFlight }), nil
	})
	var stalled int
	for _, r := range p.API.Requests() {
		if r.Stalled {
			stalled++
			require.Zero(t, r.Status, "the stalled answer was never sent")
		}
	}
	require.Equal(t, 1, stalled)
}

// requireGone checks that no process of build id is left in the project
// pod: neither those seen running (the CLI, its shell, its tools) nor any
// other whose environment points at the project's stand-in (before are the
// pod's own) or carries the runner's marker of the build (KILN_AGENT_RUN).
// It allows a few seconds for the kill to land.
func requireGone(t *testing.T, p *harness.Project, id string, before, running []int) {
	t.Helper()
	var left []int
	deadline := time.Now().Add(5 * time.Second)
	for {
		left = slices.DeleteFunc(slices.Clone(running), func(pid int) bool { return !harness.Alive(pid) })
		for _, pid := range append(p.AgentProcs(before), harness.Procs("KILN_AGENT_RUN="+id)...) {
			if !slices.Contains(left, pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var desc []string
	for _, pid := range left {
		desc = append(desc, fmt.Sprintf("%d %q", pid, harness.Cmdline(pid)))
	}
	require.Empty(t, left, "processes of the build still running:\n%s", strings.Join(desc, "\n"))
}

// claudeProc is the CLI's process among pids.
func claudeProc(t *testing.T, pids []int) int {
	t.Helper()
	bin, err := messagesapi.ClaudeBinary()
	require.NoError(t, err)
	bin, err = filepath.EvalSymlinks(bin)
	require.NoError(t, err)
	for _, pid := range pids {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == bin {
			return pid
		}
	}
	t.Fatalf("no process of %s among %v", bin, pids)
	return 0
}

// requireSafeArgv finds the CLI among pids and checks its argv: print mode
// with stream-json, the runner's own denials, no skip-permissions, no prompt.
func requireSafeArgv(t *testing.T, pids []int) {
	t.Helper()
	argv := harness.Cmdline(claudeProc(t, pids))
	require.Contains(t, argv, "-p")
	require.Contains(t, argv, "--verbose")
	require.Contains(t, argv, "Bash(git push:*)")
	for _, a := range argv {
		require.NotContains(t, a, "dangerously")
		require.Less(t, len(a), 1000, "no prompt in argv")
	}
}
