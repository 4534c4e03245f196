package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

func TestNormalize(t *testing.T) {
	t.Parallel()
	n := newNormalizer(map[string]string{
		"/tmp/kiln-record-123/repo": "/workspace",
		"/tmp/kiln-record-123/home": "/home/agent",
		"/tmp/kiln-record-123":      "/tmp/record",
	}, "127.0.0.1:40417")
	in := `{"cwd":"/tmp/kiln-record-123/repo","session_id":"6cc25fed-546e-423c-9a36-1ffa6b4e4159",` +
		`"memory":"/tmp/kiln-record-123/home/.claude/projects/-tmp-kiln-record-123-repo/memory/",` +
		`"uuid":"2a12e0f6-0560-41e1-a4d5-93355a61b47c","parent":"6cc25fed-546e-423c-9a36-1ffa6b4e4159",` +
		`"timestamp":"2026-12-01T19:14:47.448Z","sock":"/tmp/cc-socks/8822.sock","other":"/tmp/kiln-record-123/x",` +
		`"msg":"check your gateway (127.0.0.1:40417)","duration_ms":348,"duration_api_ms":0,"ttft_ms":212,` +
		`"out":"saved to: /tmp/kiln-record-123/home/.claude/projects/-tmp-kiln-record-123-repo/s/tool-results/bun418bb0.txt"}` + "\n" +
		`{"subtype":"api_retry","attempt":2,"max_retries":2,"retry_delay_ms":1095,"uuid":"f84f58a1-67f2-47d0-87b8-07ccccca7ec4"}`
	want := `{"cwd":"/workspace","session_id":"00000000-0000-4000-8000-000000000001",` +
		`"memory":"/home/agent/.claude/projects/-workspace/memory/",` +
		`"uuid":"00000000-0000-4000-8000-000000000002","parent":"00000000-0000-4000-8000-000000000001",` +
		`"timestamp":"2026-01-01T00:00:00.000Z","sock":"/tmp/cc-socks/0.sock","other":"/tmp/record/x",` +
		`"msg":"check your gateway (127.0.0.1:PORT)","duration_ms":1500,"duration_api_ms":0,"ttft_ms":120,` +
		`"out":"saved to: /home/agent/.claude/projects/-workspace/s/tool-results/persisted.txt"}` + "\n" +
		`{"subtype":"api_retry","attempt":2,"max_retries":2,"retry_delay_ms":1000,"uuid":"00000000-0000-4000-8000-000000000003"}`
	assert.Equal(t, want, n.normalize(in))
	assert.Equal(t, "00000000-0000-4000-8000-000000000003 again", n.normalize("f84f58a1-67f2-47d0-87b8-07ccccca7ec4 again"),
		"UUIDs keep their numbers across calls (stdout and stderr of one run)")
}

func TestParseLines(t *testing.T) {
	t.Parallel()
	lines, err := parseLines([]byte("{\"type\":\"a\"}\n\n{\"type\":\"b\"}\n"))
	require.NoError(t, err)
	require.Len(t, lines, 2)
	assert.Equal(t, "b", lines[1]["type"])
	_, err = parseLines([]byte("{\"type\":\"a\"}\nnot json\n"))
	require.ErrorContains(t, err, "line 2")
}

func TestAbsolutePaths(t *testing.T) {
	t.Parallel()
	s := messagesapi.Script{Name: "s", Turns: []messagesapi.Turn{
		{Tools: []messagesapi.ToolUse{
			{Name: "Read", Input: map[string]any{"file_path": "index.html"}},
			{Name: "Read", Input: map[string]any{"file_path": "/etc/hosts"}},
			{Name: "Bash", Input: map[string]any{"command": "ls"}},
		}},
		{Text: "done"},
	}}
	got := absolutePaths(s, "/tmp/r/repo")
	assert.Equal(t, "/tmp/r/repo/index.html", got.Turns[0].Tools[0].Input["file_path"])
	assert.Equal(t, "/etc/hosts", got.Turns[0].Tools[1].Input["file_path"])
	assert.Equal(t, map[string]any{"command": "ls"}, got.Turns[0].Tools[2].Input)
	assert.Equal(t, "index.html", s.Turns[0].Tools[0].Input["file_path"], "the scenario's script is not changed")
}
