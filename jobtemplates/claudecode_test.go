package jobtemplates

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// TestToolsMatchPinnedClaudeCode runs the pinned Claude Code once and checks
// ClaudeCodeVersion, ClaudeCode2_1_328Tools and every tool the built-in
// templates allow or disallow against its init line, which it prints before
// its first API call. The CLI is started with every one of those names
// allowed (and none disallowed: a disallowed tool leaves the init line), so
// tools that only appear when named show up too. The known set must equal
// the CLI's built-in tools: a release that drops a tool, or adds one, fails
// here and the list is brought up to date with the pinned version.
func TestToolsMatchPinnedClaudeCode(t *testing.T) {
	t.Parallel()
	root, err := messagesapi.RepoRoot()
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(root, "tests/tools/claude-code.version"))
	require.NoError(t, err)
	version := strings.TrimSpace(string(b))
	require.Equal(t, version, ClaudeCodeVersion, "tests/tools/claude-code.version and jobtemplates.ClaudeCodeVersion must name the same release")
	bin, err := messagesapi.ClaudeBinary()
	if err != nil {
		t.Fatalf("the pinned Claude Code %s: %v", version, err)
	}

	// Every name the templates use, by template and field, for the messages.
	used := map[string][]string{}
	c := Embedded()
	for _, name := range c.Names() {
		tmpl, _ := c.Get(name)
		for field, rules := range map[string][]string{"allowedTools": tmpl.Agent.AllowedTools, "disallowedTools": tmpl.Agent.DisallowedTools} {
			for _, rule := range rules {
				tool, _, _ := strings.Cut(rule, "(")
				used[tool] = append(used[tool], name+": agent."+field+" "+rule)
			}
		}
	}
	names := slices.Clone(ClaudeCode2_1_328Tools)
	for tool := range used {
		if !slices.Contains(names, tool) {
			names = append(names, tool)
		}
	}
	slices.Sort(names)

	info := claudeInit(t, bin, names)
	require.Equal(t, ClaudeCodeVersion, info.Version, "init line's claude_code_version")
	var builtin []string
	for _, tool := range info.Tools {
		if !strings.HasPrefix(tool, mcpToolPrefix) {
			builtin = append(builtin, tool)
		}
	}
	slices.Sort(builtin)
	for tool, where := range used {
		if !strings.HasPrefix(tool, mcpToolPrefix) && !slices.Contains(builtin, tool) {
			t.Errorf("Claude Code %s has no tool %q, named in %s", version, tool, strings.Join(where, "; "))
		}
	}
	if d := cmp.Diff(builtin, slices.Sorted(slices.Values(ClaudeCode2_1_328Tools))); d != "" {
		t.Errorf("ClaudeCode2_1_328Tools differ from the tools of Claude Code %s (-cli +list):\n%s", version, d)
	}
}

// claudeInfo is what the test reads from the CLI's system/init line.
type claudeInfo struct {
	Type    string   `json:"type"`
	Subtype string   `json:"subtype"`
	Version string   `json:"claude_code_version"`
	Tools   []string `json:"tools"`
}

// claudeInit runs the CLI in -p mode with allowed as --allowedTools against
// an API that refuses every request, and returns its init line. The process
// is killed once the line is read.
func claudeInit(t *testing.T, bin string, allowed []string) claudeInfo {
	t.Helper()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`))
	}))
	t.Cleanup(api.Close)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"-p", "--output-format", "stream-json", "--verbose", "--allowedTools"}, allowed...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "CLAUDE_CODE_MAX_RETRIES=0"},
		messagesapi.CLIEnv(api.URL, t.TempDir())...)
	cmd.Stdin = strings.NewReader("Say hello.")
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	var info claudeInfo
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var line claudeInfo
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Type == "system" && line.Subtype == "init" {
			info = line
			break
		}
	}
	scanErr := sc.Err()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if info.Type == "" {
		t.Fatalf("Claude Code printed no system/init line (read error: %v; stderr: %q)", scanErr, stderr.String())
	}
	require.NotEmpty(t, info.Tools, "init line without tools")
	return info
}
