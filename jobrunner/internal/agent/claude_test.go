package agent

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestClaudeCommand(t *testing.T) {
	t.Parallel()
	prompt := strings.Repeat("Change the heading; don't touch `git`. $HOME 'quoted' \"double\"\n", 20000)
	cmd, err := Claude{}.Command(Settings{
		Prompt:          prompt,
		Model:           "claude-sonnet-4-5",
		MaxTurns:        12,
		AllowedTools:    []string{"Read", "Edit", "Bash(npm test:*)", "Read"},
		DisallowedTools: []string{"WebFetch", "Bash(git push:*)"},
		PermissionMode:  "acceptEdits",
	})
	require.NoError(t, err)
	want := []string{
		"claude", "-p", "--output-format", "stream-json", "--verbose",
		"--allowedTools", "Read", "Edit", "Bash(npm test:*)",
		"--disallowedTools", "WebFetch", "Bash(git push:*)", "Bash(git commit:*)",
		"--permission-mode", "acceptEdits",
		"--max-turns", "12",
		"--model", "claude-sonnet-4-5",
	}
	if diff := cmp.Diff(want, cmd.Argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	require.Equal(t, prompt, string(cmd.Stdin), "the prompt goes on stdin")
	for _, a := range cmd.Argv {
		require.NotContains(t, a, "Change the heading", "the prompt is never in argv")
	}
	require.Equal(t,
		"claude -p --output-format stream-json --verbose --allowedTools Read Edit 'Bash(npm test:*)' "+
			"--disallowedTools WebFetch 'Bash(git push:*)' 'Bash(git commit:*)' --permission-mode acceptEdits "+
			"--max-turns 12 --model claude-sonnet-4-5",
		cmd.Shell())
}

func TestClaudeCommandDefaults(t *testing.T) {
	t.Parallel()
	cmd, err := Claude{Binary: "/opt/bin/claude"}.Command(Settings{Prompt: "hi", AllowedTools: []string{"Read"}})
	require.NoError(t, err)
	want := []string{
		"/opt/bin/claude", "-p", "--output-format", "stream-json", "--verbose",
		"--allowedTools", "Read",
		"--disallowedTools", "Bash(git commit:*)", "Bash(git push:*)",
		"--permission-mode", "default",
		"--max-turns", "30",
	}
	if diff := cmp.Diff(want, cmd.Argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
}

func TestClaudeCommandRefuses(t *testing.T) {
	t.Parallel()
	ok := Settings{Prompt: "p", AllowedTools: []string{"Read"}, PermissionMode: "plan"}
	tests := []struct {
		name   string
		change func(*Settings)
		unsafe bool
		msg    string
	}{
		{"bypassPermissions", func(s *Settings) { s.PermissionMode = "bypassPermissions" }, true, `permission mode "bypassPermissions"`},
		{"bypassPermissions any case", func(s *Settings) { s.PermissionMode = "BYPASSPERMISSIONS" }, true, "skip permission checks"},
		{"unknown mode", func(s *Settings) { s.PermissionMode = "yolo" }, false, "must be one of default, acceptEdits, plan, dontAsk"},
		{"skip flag smuggled as a tool", func(s *Settings) {
			s.AllowedTools = append(s.AllowedTools, "--dangerously-skip-permissions")
		}, false, "must not start with '-'"},
		{"skip flag smuggled as a model", func(s *Settings) { s.Model = "--dangerously-skip-permissions" }, false, "model"},
		{"skip flag smuggled as a disallowed tool", func(s *Settings) {
			s.DisallowedTools = []string{"-x"}
		}, false, "disallowed tools"},
		{"no prompt", func(s *Settings) { s.Prompt = " \n" }, false, "prompt: required"},
		{"no allowed tools", func(s *Settings) { s.AllowedTools = nil }, false, "allowed tools: at least one"},
		{"empty tool", func(s *Settings) { s.AllowedTools = []string{"Read", " "} }, false, "empty tool name"},
		{"newline in tool", func(s *Settings) { s.AllowedTools = []string{"Read\nEdit"} }, false, "control characters"},
		{"NUL in model", func(s *Settings) { s.Model = "a\x00b" }, false, "control characters"},
		{"negative turns", func(s *Settings) { s.MaxTurns = -1 }, false, "must be positive"},
		{"negative budget", func(s *Settings) { s.MaxBudgetUSD = -0.5 }, false, "max budget usd -0.5: must be a positive amount"},
		{"NaN budget", func(s *Settings) { s.MaxBudgetUSD = math.NaN() }, false, "max budget usd NaN"},
		{"infinite budget", func(s *Settings) { s.MaxBudgetUSD = math.Inf(1) }, false, "max budget usd"},
		{"session id as a flag", func(s *Settings) { s.Resume = "--dangerously-skip-permissions" }, false, "resume: session id \"--dangerously-skip-permissions\": must be a UUID"},
		{"session id as a path", func(s *Settings) { s.Resume = "../../etc/passwd" }, false, "resume: session id"},
		{"session id too short", func(s *Settings) { s.Resume = "74b6ee36-b528-4614-a326-fdfaef4ea09" }, false, "must be a UUID"},
		{"session id with a newline", func(s *Settings) { s.Resume = "74b6ee36-b528-4614-a326-fdfaef4ea09e\n" }, false, "must be a UUID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ok
			s.AllowedTools = append([]string(nil), ok.AllowedTools...)
			tt.change(&s)
			_, err := Claude{}.Command(s)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.msg)
			if tt.unsafe {
				require.ErrorIs(t, err, ErrUnsafePermissions)
			} else {
				require.ErrorIs(t, err, ErrInvalidSettings)
			}
		})
	}
}

func TestClaudeCommandNeverSkipsPermissions(t *testing.T) {
	t.Parallel()
	for _, mode := range append([]string{""}, claudePermissionModes...) {
		cmd, err := Claude{}.Command(Settings{Prompt: "p", AllowedTools: []string{"Bash"}, PermissionMode: mode})
		require.NoError(t, err, mode)
		for _, a := range cmd.Argv {
			require.NotContains(t, a, "dangerously")
			require.NotEqual(t, "bypassPermissions", a)
		}
		require.Subset(t, cmd.Argv, ClaudeAlwaysDisallowed)
	}
}

func TestClaudeCommandBudgetAndResume(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		budget float64
		resume string
		tail   []string
	}{
		{"neither", 0, "", nil},
		{"budget", 0.05, "", []string{"--max-budget-usd", "0.05"}},
		{"whole dollars", 2, "", []string{"--max-budget-usd", "2"}},
		{"resume", 0, "74b6ee36-b528-4614-a326-fdfaef4ea09e", []string{"--resume", "74b6ee36-b528-4614-a326-fdfaef4ea09e"}},
		{"both", 1.25, "A64E31E0-5D55-4BCA-8670-A265630B8FAF", []string{"--max-budget-usd", "1.25", "--resume", "A64E31E0-5D55-4BCA-8670-A265630B8FAF"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd, err := Claude{}.Command(Settings{Prompt: "p", AllowedTools: []string{"Read"}, MaxTurns: 5, MaxBudgetUSD: tt.budget, Resume: tt.resume})
			require.NoError(t, err)
			want := append([]string{
				"claude", "-p", "--output-format", "stream-json", "--verbose",
				"--allowedTools", "Read", "--disallowedTools", "Bash(git commit:*)", "Bash(git push:*)",
				"--permission-mode", "default", "--max-turns", "5",
			}, tt.tail...)
			if diff := cmp.Diff(want, cmd.Argv); diff != "" {
				t.Errorf("argv (-want +got):\n%s", diff)
			}
			require.Equal(t, "p", string(cmd.Stdin), "a resumed run's prompt still goes on stdin")
		})
	}
}

func TestUSD(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{
		0: "$0.00", 0.12: "$0.12", 0.0712: "$0.0712", 0.24059999999999998: "$0.2406", 5: "$5.00", 0.00004: "$0.00", 1.5: "$1.50",
	} {
		require.Equal(t, want, USD(v), "%v", v)
	}
}
