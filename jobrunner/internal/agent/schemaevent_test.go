package agent

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kilnbuild/kiln/schema"
	"github.com/stretchr/testify/require"
)

func TestSchemaPayload(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 10000)
	tests := []struct {
		name    string
		event   Event
		typ     schema.EventType
		payload string
	}{
		{"text", Event{Kind: KindText, Text: "hi <b>"}, schema.EventAgentText, `{"text":"hi \u003cb\u003e"}`},
		{"tool call", Event{Kind: KindToolCall, ToolCall: &ToolCall{ID: "t1", Name: "Read", Input: `{"file_path":"a"}`}},
			schema.EventToolCall, `{"id":"t1","name":"Read","input":"{\"file_path\":\"a\"}"}`},
		{"tool result", Event{Kind: KindToolResult, ToolResult: &ToolResult{ToolUseID: "t1", Summary: "ok", Size: 2}},
			schema.EventToolResult, `{"tool_use_id":"t1","summary":"ok","is_error":false,"truncated":false,"size":2}`},
		{"usage", Event{Kind: KindUsage, Usage: &Usage{InputTokens: 1, OutputTokens: 2, CacheCreationInputTokens: 3, CacheReadInputTokens: 4, Turns: 5, CostUSD: 0.5}},
			schema.EventUsage, `{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"turns":5,"cost_usd":0.5}`},
		{"init", Event{Kind: KindInit, Init: &Init{SessionID: "s", Model: "m"}},
			schema.EventLog, `{"level":"info","message":"agent session started: model m","session_id":"s","model":"m"}`},
		{"init, all of it", Event{Kind: KindInit, Init: &Init{SessionID: "s", Model: "m", Version: "2.1.328", PermissionMode: "acceptEdits", Tools: []string{"Bash", "Read"}}},
			schema.EventLog, `{"level":"info","message":"agent session started: version 2.1.328, model m, permission mode acceptEdits","session_id":"s","model":"m",
			"agent_version":"2.1.328","permission_mode":"acceptEdits","tools":["Bash","Read"]}`},
		{"retry", Event{Kind: KindRetry, Retry: &Retry{Attempt: 3, MaxRetries: 10, DelayMS: 2200, Status: 529, Error: "overloaded"}},
			schema.EventAgentRetry, `{"attempt":3,"max_retries":10,"delay_ms":2200,"status":529,"error":"overloaded"}`},
		{"retry, values the dispatcher refuses are mended", Event{Kind: KindRetry, Retry: &Retry{Attempt: 0, MaxRetries: -1, DelayMS: -5, Status: 1000}},
			schema.EventAgentRetry, `{"attempt":1,"max_retries":0,"delay_ms":0,"status":0,"error":""}`},
		{"denial", Event{Kind: KindDenial, Denial: &PermissionDenial{ToolName: "Bash", ToolUseID: "t1", Input: `{"command":"git push"}`, Reason: "denied"}},
			schema.EventPermissionDenied, `{"tool_use_id":"t1","tool":"Bash","summary":"git push","reason":"denied"}`},
		{"denial without a tool name", Event{Kind: KindDenial, Denial: &PermissionDenial{}},
			schema.EventPermissionDenied, `{"tool":"unknown","summary":"","reason":""}`},
		{"pushed", Event{Kind: KindPushed, Text: "the agent pushed"}, schema.EventLog, `{"level":"warn","message":"the agent pushed"}`},
		{"notice", Event{Kind: KindNotice, Notice: &Notice{Level: schema.LogError, Text: "Invalid API key"}}, schema.EventLog,
			`{"level":"error","message":"agent: Invalid API key"}`},
		{"notice of an odd level", Event{Kind: KindNotice, Notice: &Notice{Level: "loud", Text: "x"}}, schema.EventLog,
			`{"level":"info","message":"agent: x"}`},
		{"final success", Event{Kind: KindFinal, Final: &Final{Success: true, Subtype: "success", NumTurns: 3, Result: "done"}},
			schema.EventLog, `{"level":"info","message":"agent finished","success":true,"subtype":"success","num_turns":3}`},
		{"final failure", Event{Kind: KindFinal, Final: &Final{Subtype: "error_max_turns", Error: "too many", NumTurns: 2,
			PermissionDenials: []PermissionDenial{{ToolName: "Bash"}}}},
			schema.EventLog, `{"level":"error","message":"agent failed","success":false,"subtype":"error_max_turns","error":"too many","num_turns":2,"permission_denials":["Bash"]}`},
		{"final failure with a reason", Event{Kind: KindFinal, Final: &Final{Subtype: "success", Reason: schema.ReasonAgentAuth, Error: "401", NumTurns: 1}},
			schema.EventLog, `{"level":"error","message":"agent failed (agent_auth)","success":false,"subtype":"success","error":"401","num_turns":1}`},
		{"warning", Event{Kind: KindWarning, Text: "line 3: bad"}, schema.EventLog, `{"level":"warn","message":"line 3: bad"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			typ, payload := schemaEvent(t, tt.event)
			require.Equal(t, tt.typ, typ)
			require.JSONEq(t, tt.payload, string(payload))
		})
	}

	// A hand-made oversized tool result is bounded all the same.
	_, payload := schemaEvent(t, Event{Kind: KindToolResult, ToolResult: &ToolResult{Summary: long}})
	require.Less(t, len(payload), MaxSummaryBytes+200)
	require.Contains(t, string(payload), `"truncated":true,"size":10000`)

	_, err := SchemaPayload(Event{Kind: KindToolCall})
	require.Error(t, err, "a tool call event without its ToolCall")
	_, err = SchemaPayload(Event{Kind: "nonsense"})
	require.Error(t, err)
}

// schemaEvent is e as the runner posts it: its schema event type and payload JSON.
func schemaEvent(t testing.TB, e Event) (schema.EventType, []byte) {
	t.Helper()
	p, err := SchemaPayload(e)
	require.NoError(t, err)
	in, err := schema.NewEventInput(time.Now(), p)
	require.NoError(t, err)
	return in.Type, in.Payload
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	s, cut := Truncate("short", 10)
	require.Equal(t, "short", s)
	require.False(t, cut)

	for _, in := range []string{strings.Repeat("a", 5000), strings.Repeat("é", 5000), strings.Repeat("😀", 5000)} {
		for _, limit := range []int{-1, 0, 1, 3, 10, 50, 51, 52, 100, 2048, len(in) - 1} {
			out, cut := Truncate(in, limit)
			require.True(t, cut)
			require.LessOrEqual(t, len(out), max(limit, 0), "limit %d", limit)
			require.True(t, utf8.ValidString(out), "limit %d: %q", limit, out)
			if limit >= 100 {
				require.Contains(t, out, "bytes shown]")
			}
		}
	}
	out, _ := Truncate(strings.Repeat("a", 3000), 2048)
	require.True(t, strings.HasSuffix(out, "\n[... truncated: 2006 of 3000 bytes shown]"), out[2000:])
	require.Len(t, out, 2048)
}
