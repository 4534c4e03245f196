package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// scenario is one recording: a prompt, the model's script, the CLI's
// settings (Kiln's argv shape: Bash(git commit:*) and Bash(git push:*) are
// always disallowed, permission mode default) and what the run must show.
type scenario struct {
	name       string
	prompt     string
	script     messagesapi.Script
	allowed    []string
	disallowed []string
	maxTurns   int
	// maxBudget, when > 0, is passed as --max-budget-usd.
	maxBudget float64
	env       []string
	// remote gives the repository a bare origin it can push to.
	remote bool
	// cancelWhenStalled sends SIGTERM once the stand-in stalls a request.
	cancelWhenStalled bool
	check             func(*recording) error
}

// quick keeps the CLI's retries of API errors short (its default is 10
// retries over about 3 minutes).
var quick = []string{"CLAUDE_CODE_MAX_RETRIES=2"}

func tool(name string, input map[string]any) []messagesapi.ToolUse {
	return []messagesapi.ToolUse{{Name: name, Input: input}}
}

func usage(in, out, cacheRead int) messagesapi.Usage {
	return messagesapi.Usage{InputTokens: in, OutputTokens: out, CacheReadInputTokens: cacheRead}
}

var editHeading = map[string]any{"file_path": "index.html", "old_string": "<h1>Hello</h1>", "new_string": "<h1>Welcome to Acme</h1>"}

// apiError is a scenario whose every request is refused with e.
func apiError(name string, e messagesapi.APIError, env []string, check func(*recording) error) scenario {
	return scenario{
		name:     name,
		prompt:   "Change the heading on the landing page to \"Welcome to Acme\".\n",
		script:   messagesapi.Script{Name: name, Turns: []messagesapi.Turn{{Error: &e}}},
		allowed:  []string{"Read", "Edit"},
		maxTurns: 10,
		env:      env,
		check: all(exitCode("1"), resultIs("is_error", true), resultIs("terminal_reason", "api_error"),
			resultIs("api_error_status", float64(e.Status)), check),
	}
}

var scenarios = []scenario{
	{
		name:   "success-edit",
		prompt: "Change the heading on the landing page (index.html) to \"Welcome to Acme\".\n",
		script: messagesapi.Script{Name: "success-edit", Turns: []messagesapi.Turn{
			{Text: "I'll look at the landing page first.", Tools: tool("Read", map[string]any{"file_path": "index.html"}), Usage: usage(5200, 48, 0)},
			{Tools: tool("Edit", editHeading), Usage: usage(5350, 96, 5200)},
			{Text: "Updated the heading in index.html to \"Welcome to Acme\".", Usage: usage(5480, 22, 5350)},
		}},
		allowed:  []string{"Read", "Edit"},
		maxTurns: 10,
		check: all(exitCode("0"), resultIs("subtype", "success"), resultIs("is_error", false),
			fileHas("index.html", "<h1>Welcome to Acme</h1>")),
	},
	{
		name:   "new-file",
		prompt: "Add a short getting-started guide at docs/guide/getting-started.md explaining how to preview the site.\n",
		script: messagesapi.Script{Name: "new-file", Turns: []messagesapi.Turn{
			{Text: "I'll write the guide in a new docs/guide folder.", Tools: tool("Write", map[string]any{
				"file_path": "docs/guide/getting-started.md",
				"content":   "# Getting started\n\nOpen index.html in a browser to preview the site.\n",
			})},
			{Text: "Added docs/guide/getting-started.md."},
		}},
		allowed:  []string{"Read", "Write", "Edit"},
		maxTurns: 10,
		check:    all(exitCode("0"), resultIs("is_error", false), fileHas("docs/guide/getting-started.md", "# Getting started")),
	},
	{
		name:   "denied-bash",
		prompt: "Install the dependencies, then tell me what the landing page says.\n",
		script: messagesapi.Script{Name: "denied-bash", Turns: []messagesapi.Turn{
			{Text: "I'll install the dependencies first.", Tools: tool("Bash", map[string]any{"command": "npm install", "description": "Install dependencies"})},
			{Text: "I may not run npm here; I'll read the page instead.", Tools: tool("Read", map[string]any{"file_path": "index.html"})},
			{Text: "I could not install dependencies (Bash is not permitted). The landing page heading says \"Hello\"."},
		}},
		allowed:  []string{"Read", "Edit"},
		maxTurns: 10,
		check:    all(exitCode("0"), resultIs("is_error", false), denied("Bash", "npm install"), hasSystem("permission_denied")),
	},
	{
		name:   "denied-push",
		prompt: "Change the heading on the landing page to \"Welcome to Acme\" and push it.\n",
		script: messagesapi.Script{Name: "denied-push", Turns: []messagesapi.Turn{
			{Tools: tool("Edit", editHeading)},
			{Text: "Now I'll push the change.", Tools: tool("Bash", map[string]any{"command": "git push origin main", "description": "Push the change"})},
			{Text: "I changed the heading, but pushing is not permitted here."},
		}},
		allowed:  []string{"Read", "Edit"},
		maxTurns: 10,
		check:    all(exitCode("0"), resultIs("is_error", false), denied("Bash", "git push"), fileHas("index.html", "Welcome to Acme")),
	},
	{
		name:   "agent-pushed",
		remote: true,
		prompt: "Change the heading on the landing page to \"Welcome to Acme\", commit it and push it.\n",
		script: messagesapi.Script{Name: "agent-pushed", Turns: []messagesapi.Turn{
			{Tools: tool("Edit", editHeading)},
			{Tools: tool("Bash", map[string]any{"command": "git -C . commit -am 'Welcome visitors on the landing page'", "description": "Commit the change"})},
			{Tools: tool("Bash", map[string]any{"command": "git -C . push origin main", "description": "Push the change"})},
			{Text: "Committed and pushed the new heading."},
		}},
		allowed:  []string{"Read", "Edit", "Bash(git:*)"},
		maxTurns: 10,
		check:    all(exitCode("0"), hasSystem("vcs_state_changed"), remoteCommits(2)),
	},
	apiError("api-error", messagesapi.APIError{Status: 401, Message: "invalid x-api-key"},
		[]string{"CLAUDE_CODE_MAX_RETRIES=0"}, retries(0)),
	apiError("api-401", messagesapi.APIError{Status: 401, Message: "invalid x-api-key"}, quick, retries(2)),
	apiError("api-403", messagesapi.APIError{Status: 403, Message: "Your API key does not have permission to use the specified resource."}, quick, nil),
	apiError("api-400", messagesapi.APIError{Status: 400, Message: "messages.0.content.1: unknown content block type"}, quick, nil),
	apiError("api-529", messagesapi.APIError{Status: 529, Message: "Overloaded"}, quick, retries(2)),
	apiError("api-500", messagesapi.APIError{Status: 500, Message: "Internal server error"}, quick, retries(2)),
	{
		name:   "prompt-too-long",
		prompt: "Change the heading on the landing page to \"Welcome to Acme\".\n",
		script: messagesapi.Script{Name: "prompt-too-long", Turns: []messagesapi.Turn{{Error: &messagesapi.APIError{
			Status: 400, Message: "prompt is too long: 215467 tokens > 200000 maximum"}}}},
		allowed:  []string{"Read", "Edit"},
		maxTurns: 10,
		env:      quick,
		check:    all(resultIs("is_error", true), resultIs("terminal_reason", "prompt_too_long")),
	},
	{
		name:   "max-turns",
		prompt: "Make the test suite pass.\n",
		script: messagesapi.Script{Name: "max-turns", Turns: []messagesapi.Turn{
			{Text: "I'll run the tests first.", Tools: tool("Bash", map[string]any{"command": "npm test", "description": "Run the test suite"}),
				Usage: messagesapi.Usage{InputTokens: 3, OutputTokens: 40, CacheCreationInputTokens: 4800}},
			{Text: "I may not run them; I'll read the README.", Tools: tool("Read", map[string]any{"file_path": "README.md"}),
				Usage: messagesapi.Usage{InputTokens: 3, OutputTokens: 38, CacheReadInputTokens: 4800}},
			{Tools: tool("Edit", editHeading)},
			{Text: "Done."},
		}},
		allowed:  []string{"Read", "Edit"},
		maxTurns: 2,
		check:    all(exitCode("1"), resultIs("subtype", "error_max_turns"), resultIs("num_turns", 3.0), denied("Bash", "npm test")),
	},
	{
		// --max-budget-usd 0.05 and a first turn the CLI prices at $0.12: the
		// CLI stops after it, before running its tool.
		name:   "max-budget",
		prompt: "Make the test suite pass.\n",
		script: messagesapi.Script{Name: "max-budget", Turns: []messagesapi.Turn{
			{Text: "I'll read the README first.", Tools: tool("Read", map[string]any{"file_path": "README.md"}), Usage: messagesapi.BigUsage},
			{Tools: tool("Edit", editHeading), Usage: messagesapi.BigUsage},
			{Text: "Done."},
		}},
		allowed:   []string{"Read", "Edit"},
		maxTurns:  10,
		maxBudget: 0.05,
		check: all(exitCode("1"), resultIs("subtype", "error_max_budget_usd"), resultIs("terminal_reason", "budget_exhausted"),
			resultIs("total_cost_usd", 0.12)),
	},
	{
		name:   "big-tool-result",
		prompt: "Print the numbers from 1 to 70000 so I can check the counter.\n",
		script: messagesapi.Script{Name: "big-tool-result", Turns: []messagesapi.Turn{
			{Tools: tool("Bash", map[string]any{"command": "seq 1 70000", "description": "Print 1 to 70000"})},
			{Text: "Printed 1 to 70000."},
		}},
		allowed:  []string{"Read", "Bash(seq:*)"},
		maxTurns: 10,
		check:    all(exitCode("0"), resultIs("is_error", false), toolResultOK()),
	},
	{
		name:   "cancelled",
		prompt: "Change the heading on the landing page to \"Welcome to Acme\".\n",
		script: messagesapi.Script{Name: "cancelled", Turns: []messagesapi.Turn{
			{Text: "I'll look at the landing page first.", Tools: tool("Read", map[string]any{"file_path": "index.html"})},
			{Text: "never sent", Stall: 5 * time.Minute},
		}},
		allowed:           []string{"Read", "Edit"},
		maxTurns:          10,
		cancelWhenStalled: true,
		check:             all(noResult(), stalledRequest()),
	},
}

// all runs every check (nil ones skipped) and joins their errors.
func all(checks ...func(*recording) error) func(*recording) error {
	return func(r *recording) error {
		var errs []error
		for _, c := range checks {
			if c != nil {
				errs = append(errs, c(r))
			}
		}
		return errors.Join(errs...)
	}
}

func result(r *recording) map[string]any {
	for _, l := range r.lines {
		if l["type"] == "result" {
			return l
		}
	}
	return nil
}

func exitCode(want string) func(*recording) error {
	return func(r *recording) error {
		if r.status != want {
			return fmt.Errorf("exit status %s, want %s", r.status, want)
		}
		return nil
	}
}

func resultIs(key string, want any) func(*recording) error {
	return func(r *recording) error {
		res := result(r)
		if res == nil {
			return errors.New("no result line")
		}
		if got := res[key]; got != want {
			return fmt.Errorf("result %s = %v, want %v", key, got, want)
		}
		return nil
	}
}

func noResult() func(*recording) error {
	return func(r *recording) error {
		if result(r) != nil {
			return errors.New("a result line, want none (cancelled)")
		}
		return nil
	}
}

func hasSystem(subtype string) func(*recording) error {
	return func(r *recording) error {
		for _, l := range r.lines {
			if l["type"] == "system" && l["subtype"] == subtype {
				return nil
			}
		}
		return fmt.Errorf("no system/%s line", subtype)
	}
}

func retries(n int) func(*recording) error {
	return func(r *recording) error {
		got := 0
		for _, l := range r.lines {
			if l["type"] == "system" && l["subtype"] == "api_retry" {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d api_retry lines, want %d", got, n)
		}
		return nil
	}
}

func denied(toolName, command string) func(*recording) error {
	return func(r *recording) error {
		res := result(r)
		if res == nil {
			return errors.New("no result line")
		}
		ds, _ := res["permission_denials"].([]any)
		for _, d := range ds {
			m, _ := d.(map[string]any)
			in, _ := m["tool_input"].(map[string]any)
			if m["tool_name"] == toolName && strings.Contains(fmt.Sprint(in["command"]), command) {
				return nil
			}
		}
		return fmt.Errorf("no permission denial of %s %q in %v", toolName, command, ds)
	}
}

func fileHas(name, want string) func(*recording) error {
	return func(r *recording) error {
		b, err := os.ReadFile(filepath.Join(r.dir, name))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), want) {
			return fmt.Errorf("%s does not contain %q: %q", name, want, b)
		}
		return nil
	}
}

func remoteCommits(want int) func(*recording) error {
	return func(r *recording) error {
		out, err := exec.Command("git", "-C", r.remote, "rev-list", "--count", "main").Output()
		if err != nil {
			return fmt.Errorf("counting the remote's commits: %w", err)
		}
		if got := strings.TrimSpace(string(out)); got != fmt.Sprint(want) {
			return fmt.Errorf("remote has %s commits on main, want %d (the agent's push)", got, want)
		}
		return nil
	}
}

// toolResultOK says the stand-in got a tool result that is not an error.
func toolResultOK() func(*recording) error {
	return func(r *recording) error {
		for _, q := range r.requests {
			if slices.ContainsFunc(q.ToolResults, func(t messagesapi.ToolResult) bool { return !t.IsError && t.Content != "" }) {
				return nil
			}
		}
		return errors.New("no successful tool result reached the API")
	}
}

func stalledRequest() func(*recording) error {
	return func(r *recording) error {
		for _, q := range r.requests {
			if q.Stalled {
				return nil
			}
		}
		return errors.New("the CLI was not stopped during the stalled request")
	}
}
