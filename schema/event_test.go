package schema_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnbuild/kiln/schema"
)

// The payloads' JSON is what clients already read: these are the bytes
// the runner and the dispatcher put on the wire.
func TestPayloadWireFormat(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	for _, c := range []struct {
		p    schema.Payload
		want string
	}{
		{schema.StatusPayload{Status: schema.StatusRunning}, `{"status":"running","error":""}`},
		{schema.StatusPayload{Status: schema.StatusFailed, Error: "out of memory", Reason: schema.ReasonOOM},
			`{"status":"failed","error":"out of memory","reason":"oom"}`},
		{schema.AgentTextPayload{Text: "hi <b>"}, `{"text":"hi \u003cb\u003e"}`},
		{schema.ToolCallPayload{ID: "t1", Name: "Read", Input: `{"file_path":"a"}`}, `{"id":"t1","name":"Read","input":"{\"file_path\":\"a\"}"}`},
		{schema.ToolCallPayload{Name: "Bash"}, `{"name":"Bash"}`},
		{schema.ToolResultPayload{ToolUseID: "t1", Summary: "ok", Size: 2}, `{"tool_use_id":"t1","summary":"ok","is_error":false,"truncated":false,"size":2}`},
		{schema.UsagePayload{InputTokens: 1, OutputTokens: 2, CacheCreationInputTokens: 3, CacheReadInputTokens: 4, Turns: 5, CostUSD: 0.5},
			`{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"turns":5,"cost_usd":0.5}`},
		{schema.GitPayload{FilesChanged: []string{"a"}, Committed: true, CommitSHA: "abc", Pushed: true},
			`{"files_changed":["a"],"committed":true,"commit_sha":"abc","pushed":true}`},
		{schema.GitPayload{FilesChanged: []string{}, Error: "git add: boom"}, `{"files_changed":[],"committed":false,"pushed":false,"error":"git add: boom"}`},
		{schema.LogPayload{Level: schema.LogInfo, Message: "agent session started", SessionID: "s", Model: "m"},
			`{"level":"info","message":"agent session started","session_id":"s","model":"m"}`},
		{schema.LogPayload{Level: schema.LogError, Message: "agent failed", Success: &no, Subtype: "error_max_turns", Error: "too many", NumTurns: 2, PermissionDenials: []string{"Bash"}},
			`{"level":"error","message":"agent failed","success":false,"subtype":"error_max_turns","error":"too many","num_turns":2,"permission_denials":["Bash"]}`},
		{schema.LogPayload{Level: schema.LogInfo, Message: "build succeeded", Success: &yes}, `{"level":"info","message":"build succeeded","success":true}`},
		{schema.InfoPayload{Message: "waiting for capacity"}, `{"message":"waiting for capacity"}`},
		{schema.LogPayload{Level: schema.LogInfo, Message: "agent session started", SessionID: "s", Model: "m", AgentVersion: "2.1.328",
			PermissionMode: "default", Tools: []string{"Bash", "Read"}},
			`{"level":"info","message":"agent session started","session_id":"s","model":"m","agent_version":"2.1.328","permission_mode":"default","tools":["Bash","Read"]}`},
		{schema.AgentRetryPayload{Attempt: 1, MaxRetries: 10, DelayMS: 503, Status: 401, Error: "authentication_failed"},
			`{"attempt":1,"max_retries":10,"delay_ms":503,"status":401,"error":"authentication_failed"}`},
		{schema.AgentRetryPayload{Attempt: 2, MaxRetries: 10, DelayMS: 1100, Error: "unknown"},
			`{"attempt":2,"max_retries":10,"delay_ms":1100,"status":0,"error":"unknown"}`},
		{schema.PermissionDeniedPayload{ToolUseID: "toolu_1", Tool: "Bash", Summary: "git push origin HEAD", Reason: "denied"},
			`{"tool_use_id":"toolu_1","tool":"Bash","summary":"git push origin HEAD","reason":"denied"}`},
		{schema.PermissionDeniedPayload{Tool: "Write", Summary: "/etc/x"}, `{"tool":"Write","summary":"/etc/x","reason":""}`},
	} {
		at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		in, err := schema.NewEventInput(at, c.p)
		if err != nil {
			t.Fatal(err)
		}
		if string(in.Payload) != c.want {
			t.Errorf("%T: got %s, want %s", c.p, in.Payload, c.want)
		}
		if in.Type != c.p.EventType() || !in.Time.Equal(at) {
			t.Errorf("%T: event input %+v", c.p, in)
		}
		got, err := schema.Event{Type: in.Type, Payload: in.Payload}.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(c.p, got); d != "" {
			t.Errorf("%T does not survive the wire (-sent +read):\n%s", c.p, d)
		}
	}
}

func TestDecodePayload(t *testing.T) {
	t.Parallel()
	// The first status event is written by SQL without an error field.
	p, err := schema.DecodePayload(schema.EventStatus, json.RawMessage(`{"status":"pending"}`))
	if err != nil || p != (schema.StatusPayload{Status: schema.StatusPending}) {
		t.Fatalf("pending: %#v, %v", p, err)
	}
	for _, typ := range schema.EventTypes {
		p, err := schema.DecodePayload(typ, json.RawMessage(`{"extra":1}`))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if p.EventType() != typ {
			t.Errorf("%s decodes to a %T", typ, p)
		}
	}
	if _, err := schema.DecodePayload("later", json.RawMessage(`{}`)); !errors.Is(err, schema.ErrUnknownEventType) {
		t.Errorf("unknown type: %v", err)
	}
	if _, err := schema.DecodePayload(schema.EventLog, json.RawMessage(`{"level":3}`)); err == nil {
		t.Error("a payload of the wrong shape is an error")
	}
	in := schema.EventInput{Type: schema.EventInfo, Payload: json.RawMessage(`{"message":"m"}`)}
	if p, err := in.Decode(); err != nil || p != (schema.InfoPayload{Message: "m"}) {
		t.Errorf("EventInput.Decode: %#v, %v", p, err)
	}
}

func TestPayloadAs(t *testing.T) {
	t.Parallel()
	done := schema.Event{Type: schema.EventStatus, Payload: json.RawMessage(`{"status":"completed","error":""}`)}
	if s, ok := schema.PayloadAs[schema.StatusPayload](done); !ok || s.Status != schema.StatusCompleted {
		t.Errorf("status: %+v %v", s, ok)
	}
	if _, ok := schema.PayloadAs[schema.GitPayload](done); ok {
		t.Error("a status event is not a git event")
	}
	text := schema.Event{Type: schema.EventAgentText, Payload: json.RawMessage(`not json`)}
	if _, ok := schema.PayloadAs[schema.AgentTextPayload](text); ok {
		t.Error("an unreadable payload is not ok")
	}
}

// A BuildResult's optional agent fields stay off the wire when empty.
func TestBuildResultWireFormat(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(schema.BuildResult{Success: true})
	want := `{"success":true,"output":"","error":"","commit_sha":"","files_changed":null,"duration_ms":0,"artifacts":null}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	b, _ = json.Marshal(schema.BuildResult{Reason: schema.ReasonAgentAuth, SessionID: "s",
		PermissionDenials: []schema.PermissionDenial{{Tool: "Bash", Summary: "git push"}}})
	want = `{"success":false,"output":"","error":"","commit_sha":"","files_changed":null,"duration_ms":0,"artifacts":null,` +
		`"reason":"agent_auth","permission_denials":[{"tool":"Bash","summary":"git push"}],"session_id":"s"}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

func TestReasons(t *testing.T) {
	t.Parallel()
	seen := map[schema.Reason]bool{}
	for _, r := range schema.Reasons {
		if !r.Valid() || r == schema.ReasonNone || seen[r] {
			t.Errorf("reason %q: valid %v, seen %v", r, r.Valid(), seen[r])
		}
		seen[r] = true
	}
	for _, r := range []schema.Reason{schema.ReasonAgentAuth, schema.ReasonAgentBadRequest, schema.ReasonAgentUnavailable, schema.ReasonAgentPushed} {
		if !seen[r] {
			t.Errorf("%s is not in schema.Reasons", r)
		}
	}
	if schema.Reason("agent_unknown").Valid() {
		t.Error("an unknown reason is valid")
	}
}
