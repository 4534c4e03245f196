package runnerapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnbuild/kiln/schema"
)

func TestValidatePayload(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		typ   schema.EventType
		in    string
		want  string // the stored payload; empty: refused
		fixed bool
		err   string // the refusal, as events[0]...
	}{
		// What the jobrunner sends (schema types, encoded) is stored as sent.
		{"text", schema.EventAgentText, `{"text":"hi"}`, `{"text":"hi"}`, false, ""},
		{"tool call, optional fields absent", schema.EventToolCall, `{"name":"Edit"}`, `{"name":"Edit"}`, false, ""},
		{"tool call, all fields", schema.EventToolCall, `{"id":"t1","name":"Read","input":"{}"}`, `{"id":"t1","name":"Read","input":"{}"}`, false, ""},
		{"tool result", schema.EventToolResult, `{"tool_use_id":"t","summary":"ok","is_error":false,"truncated":true,"size":9}`,
			`{"tool_use_id":"t","summary":"ok","is_error":false,"truncated":true,"size":9}`, false, ""},
		{"usage", schema.EventUsage, `{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"turns":5,"cost_usd":0.0387}`,
			`{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"turns":5,"cost_usd":0.0387}`, false, ""},
		{"git with null files (a nil slice)", schema.EventGit, `{"files_changed":null,"committed":false,"pushed":false,"error":"boom"}`,
			`{"files_changed":null,"committed":false,"pushed":false,"error":"boom"}`, false, ""},
		{"log", schema.EventLog, `{"level":"warn","message":"m","success":false,"permission_denials":["Bash"]}`,
			`{"level":"warn","message":"m","success":false,"permission_denials":["Bash"]}`, false, ""},
		{"log: the agent session's start", schema.EventLog,
			`{"level":"info","message":"agent session started","session_id":"s","model":"m","agent_version":"2.1.328","permission_mode":"default","tools":["Bash","Read"]}`,
			`{"level":"info","message":"agent session started","session_id":"s","model":"m","agent_version":"2.1.328","permission_mode":"default","tools":["Bash","Read"]}`, false, ""},
		{"agent retry", schema.EventAgentRetry, `{"attempt":1,"max_retries":10,"delay_ms":503,"status":401,"error":"authentication_failed"}`,
			`{"attempt":1,"max_retries":10,"delay_ms":503,"status":401,"error":"authentication_failed"}`, false, ""},
		{"agent retry without an answer", schema.EventAgentRetry, `{"attempt":2,"max_retries":2,"delay_ms":0,"status":0,"error":"unknown"}`,
			`{"attempt":2,"max_retries":2,"delay_ms":0,"status":0,"error":"unknown"}`, false, ""},
		{"permission denied", schema.EventPermissionDenied, `{"tool_use_id":"toolu_1","tool":"Bash","summary":"git push origin HEAD","reason":"Permission to use Bash with command git push origin HEAD has been denied."}`,
			`{"tool_use_id":"toolu_1","tool":"Bash","summary":"git push origin HEAD","reason":"Permission to use Bash with command git push origin HEAD has been denied."}`, false, ""},
		{"permission denied, no id", schema.EventPermissionDenied, `{"tool":"Write","summary":"/etc/x","reason":""}`,
			`{"tool":"Write","summary":"/etc/x","reason":""}`, false, ""},
		{"NUL in a denial", schema.EventPermissionDenied, `{"tool":"Bash","summary":"a\u0000","reason":"r"}`,
			"{\"tool\":\"Bash\",\"summary\":\"a\uFFFD\",\"reason\":\"r\",\"sanitized\":true}", true, ""},
		{"whitespace and escapes", schema.EventAgentText, " {\"t\\u0065xt\" : \"a\\nb\" } ", `{"text":"a\nb"}`, false, ""},
		{"a real U+FFFD is no repair", schema.EventAgentText, `{"text":"\ufffd"}`, "{\"text\":\"\uFFFD\"}", false, ""},

		// Text Postgres cannot store is replaced and the event flagged.
		{"NUL", schema.EventAgentText, `{"text":"a\u0000b"}`, "{\"text\":\"a\uFFFDb\",\"sanitized\":true}", true, ""},
		{"invalid UTF-8", schema.EventAgentText, "{\"text\":\"a\xffb\"}", "{\"text\":\"a\uFFFDb\",\"sanitized\":true}", true, ""},
		{"unpaired high surrogate", schema.EventAgentText, `{"text":"a\ud800b"}`, "{\"text\":\"a\uFFFDb\",\"sanitized\":true}", true, ""},
		{"unpaired low surrogate", schema.EventAgentText, `{"text":"\udc00"}`, "{\"text\":\"\uFFFD\",\"sanitized\":true}", true, ""},
		{"a surrogate pair is fine", schema.EventAgentText, `{"text":"\ud83d\ude00"}`, `{"text":"😀"}`, false, ""},
		{"an escaped backslash is no escape", schema.EventAgentText, `{"text":"\\u0000"}`, `{"text":"\\u0000"}`, false, ""},
		{"NUL in a list", schema.EventGit, `{"files_changed":["a\u0000"],"committed":false,"pushed":false}`,
			"{\"files_changed\":[\"a\uFFFD\"],\"committed\":false,\"pushed\":false,\"sanitized\":true}", true, ""},
		{"NUL in a tool input", schema.EventToolCall, `{"name":"Bash","input":"\u0000"}`, "{\"name\":\"Bash\",\"input\":\"\uFFFD\",\"sanitized\":true}", true, ""},

		// Refused.
		{"status", schema.EventStatus, `{"status":"completed"}`, "", false, `events[0].type: "status" is written by the dispatcher, not a runner`},
		{"info", schema.EventInfo, `{"message":"x"}`, "", false, `events[0].type: "info" is written by the dispatcher, not a runner`},
		{"unknown type", "later", `{}`, "", false, `events[0].type: "later" is not an event type a runner may send (one of agent_text, tool_call, tool_result, usage, git, log, agent_retry, permission_denied)`},
		{"retry: attempt from 1", schema.EventAgentRetry, `{"attempt":0,"max_retries":10,"delay_ms":5,"status":401,"error":"e"}`, "", false,
			`events[0].payload.attempt: must be at least 1, not 0 (agent_retry event)`},
		{"retry: max_retries", schema.EventAgentRetry, `{"attempt":1,"max_retries":-1,"delay_ms":5,"status":401,"error":"e"}`, "", false,
			`events[0].payload.max_retries: must not be negative, not -1 (agent_retry event)`},
		{"retry: delay", schema.EventAgentRetry, `{"attempt":1,"max_retries":1,"delay_ms":-5,"status":401,"error":"e"}`, "", false,
			`events[0].payload.delay_ms: must not be negative, not -5 (agent_retry event)`},
		{"retry: an HTTP status", schema.EventAgentRetry, `{"attempt":1,"max_retries":1,"delay_ms":5,"status":99,"error":"e"}`, "", false,
			`events[0].payload.status: must be an HTTP status (100-599) or 0 for none, not 99 (agent_retry event)`},
		{"retry: status is required", schema.EventAgentRetry, `{"attempt":1,"max_retries":1,"delay_ms":5,"error":"e"}`, "", false,
			`events[0].payload.status: required (agent_retry event)`},
		{"retry: status null", schema.EventAgentRetry, `{"attempt":1,"max_retries":1,"delay_ms":5,"status":null,"error":"e"}`, "", false,
			`events[0].payload.status: must be an integer, not null (agent_retry event)`},
		{"retry: the CLI's own keys are not the payload's", schema.EventAgentRetry, `{"attempt":1,"max_retries":1,"retry_delay_ms":5,"status":401,"error":"e"}`, "", false,
			`events[0].payload.retry_delay_ms: not a field (agent_retry event); its fields are attempt, max_retries, delay_ms, status, error`},
		{"denial: a tool", schema.EventPermissionDenied, `{"tool":" ","summary":"s","reason":"r"}`, "", false,
			`events[0].payload.tool: must name the tool (permission_denied event)`},
		{"denial: reason required", schema.EventPermissionDenied, `{"tool":"Bash","summary":"s"}`, "", false,
			`events[0].payload.reason: required (permission_denied event)`},
		{"denial: tools are no list", schema.EventPermissionDenied, `{"tool":["Bash"],"summary":"s","reason":"r"}`, "", false,
			`events[0].payload.tool: must be a string (permission_denied event)`},
		{"log: tools are strings", schema.EventLog, `{"level":"info","message":"m","tools":[1]}`, "", false,
			`events[0].payload.tools: must be an array of strings (log event)`},
		{"empty type", "", `{}`, "", false, `events[0].type: "" is not an event type`},
		{"no payload", schema.EventAgentText, ``, "", false, `events[0].payload: required: a JSON object (agent_text event)`},
		{"null payload", schema.EventAgentText, `null`, "", false, `events[0].payload: must be a JSON object (agent_text event)`},
		{"array payload", schema.EventLog, `[1]`, "", false, `events[0].payload: must be a JSON object (log event)`},
		{"string payload", schema.EventAgentText, `"hi"`, "", false, `events[0].payload: must be a JSON object`},
		{"unknown field", schema.EventAgentText, `{"text":"a","extra":1}`, "", false, `events[0].payload.extra: not a field (agent_text event); its fields are text`},
		{"keys match exactly", schema.EventAgentText, `{"Text":"a"}`, "", false, `events[0].payload.Text: not a field (agent_text event)`},
		{"the flag is the dispatcher's", schema.EventAgentText, `{"text":"a","sanitized":true}`, "", false, `events[0].payload.sanitized: not a field`},
		{"required field", schema.EventAgentText, `{}`, "", false, `events[0].payload.text: required (agent_text event)`},
		{"required of many", schema.EventToolResult, `{"summary":"s","is_error":false,"truncated":false}`, "", false, `events[0].payload.size: required (tool_result event)`},
		{"a string", schema.EventAgentText, `{"text":5}`, "", false, `events[0].payload.text: must be a string (agent_text event)`},
		{"null is no string", schema.EventAgentText, `{"text":null}`, "", false, `events[0].payload.text: must be a string, not null (agent_text event)`},
		{"an integer", schema.EventToolResult, `{"summary":"s","is_error":false,"truncated":false,"size":1.5}`, "", false, `events[0].payload.size: must be an integer (tool_result event)`},
		{"a bool", schema.EventGit, `{"files_changed":[],"committed":"yes","pushed":false}`, "", false, `events[0].payload.committed: must be true or false (git event)`},
		{"an array of strings", schema.EventGit, `{"files_changed":[1],"committed":false,"pushed":false}`, "", false, `events[0].payload.files_changed: must be an array of strings (git event)`},
		{"a number", schema.EventUsage, `{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"turns":5,"cost_usd":"1"}`,
			"", false, `events[0].payload.cost_usd: must be a number (usage event)`},
		{"given twice", schema.EventAgentText, `{"text":"a","text":"b"}`, "", false, `events[0].payload.text: given twice (agent_text event)`},
		{"log level", schema.EventLog, `{"level":"debug","message":"m"}`, "", false, `events[0].payload.level: must be info, warn or error, not "debug" (log event)`},
		{"not JSON", schema.EventAgentText, `{"text":`, "", false, `events[0].payload: must be valid JSON (agent_text event)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out, fixed, err := ValidateEvents([]schema.EventInput{{Type: c.typ, Time: time.Now(), Payload: json.RawMessage(c.in)}})
			if c.err != "" {
				if err == nil {
					t.Fatalf("accepted as %s", out[0].Payload)
				}
				if !strings.HasPrefix(err.Error(), c.err) {
					t.Fatalf("refused with %q, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := string(out[0].Payload); got != c.want {
				t.Errorf("stored %s, want %s", got, c.want)
			}
			if (fixed == 1) != c.fixed {
				t.Errorf("repaired %d, want %v", fixed, c.fixed)
			}
		})
	}
}

// A bad event anywhere refuses the batch, naming its index and type; the
// events before it do not matter.
func TestValidateEventsNamesTheIndex(t *testing.T) {
	t.Parallel()
	good, _ := schema.NewEventInput(time.Now(), schema.AgentTextPayload{Text: "ok"})
	nul, _ := schema.NewEventInput(time.Now(), schema.AgentTextPayload{Text: "\x00"})
	batch := []schema.EventInput{good, nul, good, {Type: schema.EventStatus, Payload: json.RawMessage(`{"status":"completed"}`)}}
	out, n, err := ValidateEvents(batch)
	if err == nil || err.Error() != `events[3].type: "status" is written by the dispatcher, not a runner` {
		t.Fatalf("got %v, %d, %v", out, n, err)
	}
	var ee *EventError
	if !errors.As(err, &ee) || ee.Index != 3 || ee.Type != schema.EventStatus || ee.Field != "type" {
		t.Fatalf("%#v", err)
	}
	out, n, err = ValidateEvents(batch[:3])
	if err != nil || n != 1 || len(out) != 3 {
		t.Fatalf("got %v, %d, %v", out, n, err)
	}
	if !out[0].Time.Equal(good.Time) || out[1].Type != schema.EventAgentText {
		t.Errorf("type and time kept: %+v", out)
	}
}

func TestRepairResult(t *testing.T) {
	t.Parallel()
	raw := []byte("{\"success\":true,\"output\":\"a\\u0000\",\"error\":\"b\xff\",\"commit_sha\":\"\",\"files_changed\":[\"x\\u0000y\"]," +
		"\"artifacts\":[{\"name\":\"n\",\"path\":\"p\",\"size\":1,\"sha256\":\"s\",\"url\":\"u\"}]}")
	var res schema.BuildResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	fields := repairResult(raw, &res)
	if d := cmp.Diff([]string{"error", "files_changed", "output"}, fields); d != "" {
		t.Errorf("fields (-want +got):\n%s", d)
	}
	want := schema.BuildResult{Success: true, Output: "a\uFFFD", Error: "b\uFFFD", FilesChanged: []string{"x\uFFFDy"},
		Artifacts: []schema.Artifact{{Name: "n", Path: "p", Size: 1, SHA256: "s", URL: "u"}}}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
	raw = []byte(`{"success":false,"reason":"agent_auth","session_id":"s\u0000","permission_denials":[{"tool":"Ba\u0000sh","summary":"` + "\xff" + `"}]}`)
	res = schema.BuildResult{}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	fields = repairResult(raw, &res)
	if d := cmp.Diff([]string{"permission_denials", "session_id"}, fields); d != "" {
		t.Errorf("fields (-want +got):\n%s", d)
	}
	want = schema.BuildResult{Reason: schema.ReasonAgentAuth, SessionID: "s\uFFFD",
		PermissionDenials: []schema.PermissionDenial{{Tool: "Ba\uFFFDsh", Summary: "\uFFFD"}}}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
	clean := []byte(`{"success":true,"output":"fine \ufffd"}`)
	res = schema.BuildResult{}
	_ = json.Unmarshal(clean, &res)
	if f := repairResult(clean, &res); f != nil {
		t.Errorf("a clean result was repaired: %v", f)
	}
}

// FuzzValidatePayload: whatever a runner sends, ValidatePayload does not
// panic, and what it accepts is storable (valid JSON, valid UTF-8, no NUL,
// no unpaired surrogate), of the payload type's shape, and stable: the
// stored payload without its flag validates to itself, unrepaired.
func FuzzValidatePayload(f *testing.F) {
	for _, s := range []struct{ typ, payload string }{
		{"agent_text", `{"text":"hi"}`},
		{"agent_text", `{"text":"a\u0000b\ud800"}`},
		{"agent_text", "{\"text\":\"\xff\xfe\"}"},
		{"tool_call", `{"name":"Edit","input":"{\"a\":1}"}`},
		{"tool_result", `{"summary":"s","is_error":true,"truncated":false,"size":3}`},
		{"usage", `{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"turns":5,"cost_usd":0.5}`},
		{"git", `{"files_changed":["a\u0000"],"committed":true,"commit_sha":"abc","pushed":false}`},
		{"log", `{"level":"info","message":"m","success":true,"num_turns":2,"permission_denials":null}`},
		{"status", `{"status":"completed"}`},
		{"log", `{"level":"info","message":"m","level":"warn"}`},
		{"log", `{"level":"info","message":"agent session started","agent_version":"2.1.328","permission_mode":"default","tools":["Bash"]}`},
		{"agent_retry", `{"attempt":1,"max_retries":10,"delay_ms":503,"status":401,"error":"authentication_failed"}`},
		{"agent_retry", `{"attempt":1,"max_retries":10,"delay_ms":503,"status":null,"error":"unknown"}`},
		{"permission_denied", `{"tool_use_id":"t","tool":"Bash","summary":"git push\u0000","reason":"denied"}`},
		{"permission_denied", `{"tool":"","summary":"","reason":""}`},
	} {
		f.Add(s.typ, []byte(s.payload))
	}
	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		out, fixed, err := ValidatePayload(schema.EventType(typ), payload)
		if err != nil {
			if out != nil || !strings.HasPrefix(err.Error(), "events[0].") {
				t.Fatalf("refusal %v with %q", err, out)
			}
			return
		}
		if !json.Valid(out) || !utf8.Valid(out) || needsRepair(out) {
			t.Fatalf("stored payload not storable: %q", out)
		}
		if _, err := schema.DecodePayload(schema.EventType(typ), out); err != nil {
			t.Fatalf("stored payload not of its type: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		if flag, ok := m[schema.SanitizedKey]; ok != fixed || (ok && flag != true) {
			t.Fatalf("flag %v, fixed %v: %s", flag, fixed, out)
		}
		delete(m, schema.SanitizedKey)
		plain, _ := json.Marshal(m)
		again, fixedAgain, err := ValidatePayload(schema.EventType(typ), plain)
		if err != nil || fixedAgain {
			t.Fatalf("stored payload %s does not validate cleanly: %v, %v", plain, fixedAgain, err)
		}
		want := out
		if fixed {
			want = bytes.Replace(out, []byte(`,"`+schema.SanitizedKey+`":true`), nil, 1)
			want = bytes.Replace(want, []byte(`"`+schema.SanitizedKey+`":true`), nil, 1)
		}
		if !bytes.Equal(again, want) {
			t.Fatalf("not stable: %s then %s", out, again)
		}
	})
}

func TestNeedsRepair(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		`"plain"`: false, `"\u0000"`: true, `"\\u0000"`: false, `"\\\u0000"`: true, `"\ud800"`: true,
		`"\ud800\udc00"`: false, `"\ud800\u0041"`: true, `"\udfff"`: true, `"\u00e9"`: false, "\"\xc3\"": true,
		`"\u12"`: false, `"\ud800\`: true,
	} {
		if got := needsRepair([]byte(in)); got != want {
			t.Errorf("needsRepair(%s) = %v, want %v", in, got, want)
		}
	}
}
