package messagesapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// run is one finished CLI run.
type run struct {
	lines []map[string]any
	exit  int
	took  time.Duration
}

// result is the run's result line, failing the test when there is none.
func (r run) result(t *testing.T) map[string]any {
	t.Helper()
	for _, l := range r.lines {
		if l["type"] == "result" {
			return l
		}
	}
	t.Fatalf("no result line in %d lines", len(r.lines))
	return nil
}

// system are the run's system lines of a subtype.
func (r run) system(subtype string) []map[string]any {
	var out []map[string]any
	for _, l := range r.lines {
		if l["type"] == "system" && l["subtype"] == subtype {
			out = append(out, l)
		}
	}
	return out
}

// gitRepo is a temporary git repository holding index.html with <h1>Hello</h1>.
func gitRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html>\n<title>Acme</title>\n<h1>Hello</h1>\n"), 0o644))
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init"}} {
		out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
	}
	return dir
}

// runCLI runs the pinned CLI in dir against srv with the prompt on stdin.
func runCLI(t *testing.T, srv *messagesapi.Server, dir, prompt string, env []string, args ...string) run {
	t.Helper()
	bin, err := messagesapi.ClaudeBinary()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	base := []string{"-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "default"}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH")}, messagesapi.CLIEnv(srv.URL(), t.TempDir())...), env...)
	cmd.Stdin = strings.NewReader(prompt)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	r := run{took: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		r.exit = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running the CLI: %v", err)
	}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "stdout line %q", sc.Text())
		r.lines = append(r.lines, m)
	}
	require.NoError(t, sc.Err())
	t.Logf("CLI exit %d in %v, %d lines, stderr %q", r.exit, r.took, len(r.lines), stderr.String())
	return r
}

func editScript() messagesapi.Script {
	return messagesapi.Script{Name: "edit", Turns: []messagesapi.Turn{
		{Text: "I'll look at the page first.", Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": "index.html"}}}},
		{Tools: []messagesapi.ToolUse{{Name: "Edit", Input: map[string]any{"file_path": "index.html", "old_string": "<h1>Hello</h1>", "new_string": "<h1>Welcome to Acme</h1>"}}},
			Usage: messagesapi.Usage{InputTokens: 1200, OutputTokens: 80, CacheReadInputTokens: 300}},
		{Text: "The heading now says Welcome to Acme."},
	}}
}

func TestScriptedEditChangesTheFile(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(editScript())
	dir := gitRepo(t)

	r := runCLI(t, srv, dir, "Please change the heading of index.html to Welcome to Acme.\n", nil,
		"--allowedTools", "Read", "Edit", "--max-turns", "5")

	b, err := os.ReadFile(filepath.Join(dir, "index.html"))
	require.NoError(t, err)
	assert.Contains(t, string(b), "<h1>Welcome to Acme</h1>")
	assert.NotContains(t, string(b), "Hello")
	assert.Equal(t, 0, r.exit)
	res := r.result(t)
	assert.Equal(t, false, res["is_error"])
	assert.Equal(t, "The heading now says Welcome to Acme.", res["result"])
	assert.EqualValues(t, 3, res["num_turns"])
	usage := res["usage"].(map[string]any)
	assert.EqualValues(t, 100+1200+100, usage["input_tokens"], "input tokens summed over the turns")
	assert.EqualValues(t, 10+80+10, usage["output_tokens"])

	reqs := srv.Requests()
	require.Len(t, reqs, 3)
	for i, q := range reqs {
		assert.Equal(t, "turn", q.Kind)
		assert.Equal(t, 1, q.Conversation)
		assert.Equal(t, "edit", q.Script)
		assert.Equal(t, i, q.Turn)
		assert.Equal(t, 200, q.Status)
		assert.True(t, q.Stream)
		assert.Equal(t, "Please change the heading of index.html to Welcome to Acme.\n", q.Prompt)
	}
	require.Len(t, reqs[1].ToolResults, 1)
	assert.Contains(t, reqs[1].ToolResults[0].Content, "<h1>Hello</h1>", "the Read result came back")
	require.Len(t, reqs[2].ToolResults, 1)
	assert.False(t, reqs[2].ToolResults[0].IsError)
}

func TestUnauthorizedAsTheCLIReportsIt(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "401", Turns: []messagesapi.Turn{
		{Error: &messagesapi.APIError{Status: 401, Message: "the stand-in refuses this key"}},
	}})
	r := runCLI(t, srv, gitRepo(t), "Fix the heading.\n", []string{"CLAUDE_CODE_MAX_RETRIES=2"}, "--allowedTools", "Read")

	assert.Equal(t, 1, r.exit)
	res := r.result(t)
	assert.Equal(t, true, res["is_error"])
	assert.Equal(t, "api_error", res["terminal_reason"])
	assert.EqualValues(t, 401, res["api_error_status"])
	assert.Equal(t, "authentication_error", res["api_error_type"])
	assert.Contains(t, res["result"], "the stand-in refuses this key")
	retries := r.system("api_retry")
	require.Len(t, retries, 2)
	assert.EqualValues(t, 401, retries[0]["error_status"])
	reqs := srv.Requests()
	require.Len(t, reqs, 3, "first try and 2 retries")
	for i, q := range reqs {
		assert.Equal(t, 401, q.Status)
		assert.Equal(t, 0, q.Turn)
		assert.Equal(t, i, q.Attempt)
	}
}

func TestStallPastTheClientTimeoutThenAnswer(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "stall", Turns: []messagesapi.Turn{
		{Text: "Finally.", Stall: 20 * time.Second, Times: 1},
	}})
	r := runCLI(t, srv, gitRepo(t), "Say something.\n", []string{"API_TIMEOUT_MS=1500", "CLAUDE_CODE_MAX_RETRIES=2"}, "--allowedTools", "Read")

	res := r.result(t)
	assert.Equal(t, false, res["is_error"], "the retry was answered")
	assert.Equal(t, "Finally.", res["result"])
	assert.Less(t, r.took, 15*time.Second, "the CLI gave up on the stalled request")
	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.True(t, reqs[0].Stalled)
	assert.Equal(t, 0, reqs[0].Status, "the client went away during the stall")
	assert.Equal(t, 200, reqs[1].Status)
	assert.Equal(t, 1, reqs[1].Attempt)
	assert.NotEmpty(t, r.system("api_retry"))
}

func TestDroppedConnection(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "drop", Turns: []messagesapi.Turn{
		{Text: "never whole", DropAfter: "content_block_start"},
	}})
	r := runCLI(t, srv, gitRepo(t), "Say something.\n", []string{"CLAUDE_CODE_MAX_RETRIES=1"}, "--allowedTools", "Read")

	res := r.result(t)
	assert.Equal(t, true, res["is_error"])
	assert.Equal(t, "api_error", res["terminal_reason"])
	assert.Equal(t, 1, r.exit)
	reqs := srv.Requests()
	// The CLI retries the stream, then falls back to one request that does not stream.
	require.Len(t, reqs, 3, "first try, one retry, the non-streaming fallback")
	for i, q := range reqs {
		assert.True(t, q.Dropped)
		assert.Equal(t, i < 2, q.Stream)
	}
	assert.Contains(t, res["result"], "Connection dropped")
	assert.Len(t, r.system("api_retry"), 1)
}

func TestRateLimitedThenServed(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "429", Turns: []messagesapi.Turn{
		{Text: "Served after the rate limit.", Error: &messagesapi.APIError{Status: 429, RetryAfter: 2, Times: 1}},
	}})
	r := runCLI(t, srv, gitRepo(t), "Say something.\n", []string{"CLAUDE_CODE_MAX_RETRIES=2"}, "--allowedTools", "Read")

	res := r.result(t)
	assert.Equal(t, false, res["is_error"])
	assert.Equal(t, "Served after the rate limit.", res["result"])
	retries := r.system("api_retry")
	require.Len(t, retries, 1)
	assert.EqualValues(t, 429, retries[0]["error_status"])
	t.Logf("api_retry after a 429 with retry-after 2: %v", retries[0])
	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, 429, reqs[0].Status)
	assert.Equal(t, 200, reqs[1].Status)
	assert.GreaterOrEqual(t, reqs[1].Time.Sub(reqs[0].Time), 2*time.Second, "the CLI waited as retry-after said")
}
