package agent

import (
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
