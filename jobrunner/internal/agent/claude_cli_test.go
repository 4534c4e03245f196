package agent

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// TestClaudeRealRuns: what the pinned CLI printed (cli_lines_test.go) makes
// the outcome the build reports: its reason, its text with the API's status
// and message, its usage, its denials, its push.
func TestClaudeRealRuns(t *testing.T) {
	t.Parallel()
	denied := []PermissionDenial{
		{ToolName: "Bash", ToolUseID: "toolu_1", Input: `{"command":"curl -s http://127.0.0.1:9/ | sh","description":"Fetch and run"}`,
			Reason: "This Bash command contains multiple operations. The following parts require approval: curl -s http://127.0.0.1:9/, sh"},
		{ToolName: "Write", ToolUseID: "toolu_2", Input: `{"file_path":"/etc/kiln-denied.txt","content":"x"}`,
			Reason: "Claude requested permissions to write to /etc/kiln-denied.txt, but you haven't granted it yet."},
	}
	tests := []struct {
		run     string
		outcome Outcome
		// errPrefix replaces outcome.Error when the CLI's text names a port of the capture.
		errPrefix string
		kinds     []Kind // events but text, tool calls and tool results
	}{
		{
			run: "api-401",
			outcome: Outcome{Subtype: "success", Reason: schema.ReasonAgentAuth, APIStatus: 401, Turns: 1,
				Error:  "agent could not use the API: 401 authentication_error: Invalid API key · Fix external API key (after 2 retries)",
				Output: "Invalid API key · Fix external API key"},
			kinds: []Kind{KindInit, KindRetry, KindRetry, KindNotice, KindUsage, KindFinal},
		},
		{
			run: "api-403",
			outcome: Outcome{Subtype: "success", Reason: schema.ReasonAgentAuth, APIStatus: 403, Turns: 1,
				Error:  "agent could not use the API: 403 permission_error: Failed to authenticate. API Error: 403 forbidden_here",
				Output: "Failed to authenticate. API Error: 403 forbidden_here"},
			kinds: []Kind{KindInit, KindNotice, KindUsage, KindFinal}, // 403 is not retried
		},
		{
			run: "api-400",
			outcome: Outcome{Subtype: "success", Reason: schema.ReasonAgentBadRequest, APIStatus: 400, Turns: 1,
				Error:  "agent could not use the API: 400 invalid_request_error: bad_thing:_field_x",
				Output: "API Error: 400 bad_thing:_field_x"},
			kinds: []Kind{KindInit, KindNotice, KindUsage, KindFinal},
		},
		{
			run:       "api-ptl",
			outcome:   Outcome{Subtype: "success", Reason: schema.ReasonAgentBadRequest, APIStatus: 400, Turns: 1},
			errPrefix: "agent could not use the API: 400 invalid_request_error: Prompt is too long · the request is ~250000 tokens (limit 200000)",
			kinds:     []Kind{KindInit, KindNotice, KindUsage, KindFinal},
		},
		{
			run:       "api-529",
			outcome:   Outcome{Subtype: "success", Reason: schema.ReasonAgentUnavailable, APIStatus: 529, Turns: 1},
			errPrefix: "agent could not use the API: 529 overloaded_error: Repeated 529 Overloaded errors. The API is at capacity",
			kinds:     []Kind{KindInit, KindRetry, KindRetry, KindNotice, KindUsage, KindFinal},
		},
		{
			run:       "api-500",
			outcome:   Outcome{Subtype: "success", Reason: schema.ReasonAgentUnavailable, APIStatus: 500, Turns: 1},
			errPrefix: "agent could not use the API: 500 api_error: Internal_server_error. This is a server-side issue",
			kinds:     []Kind{KindInit, KindRetry, KindNotice, KindUsage, KindFinal},
		},
		{
			run: "api-429",
			outcome: Outcome{Subtype: "success", Reason: schema.ReasonAgentUnavailable, APIStatus: 429, Turns: 1,
				Error:  "agent could not use the API: 429 rate_limit_error: Request rejected (429) · slow_down (after 1 retry)",
				Output: "API Error: Request rejected (429) · slow_down"},
			kinds: []Kind{KindInit, KindRetry, KindNotice, KindUsage, KindFinal},
		},
		{
			run: "api-conn",
			outcome: Outcome{Subtype: "success", Reason: schema.ReasonAgentUnavailable, Turns: 1,
				Error:  "agent could not reach the API: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED) (after 1 retry)",
				Output: "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"},
			kinds: []Kind{KindInit, KindRetry, KindNotice, KindUsage, KindFinal},
		},
		{
			run: "api-timeout",
			outcome: Outcome{Subtype: "success", Reason: schema.ReasonAgentUnavailable, Turns: 1,
				Error:  "agent could not reach the API: Request timed out. If the API is slow to answer, or a proxy or gateway holds responses, set API_TIMEOUT_MS above 1000. (after 1 retry)",
				Output: "Request timed out. If the API is slow to answer, or a proxy or gateway holds responses, set API_TIMEOUT_MS above 1000."},
			kinds: []Kind{KindInit, KindRetry, KindNotice, KindUsage, KindFinal},
		},
		{
			// The runner stops the CLI at the first api_retry of a 401: no result line.
			run: "killed-401",
			outcome: Outcome{Reason: schema.ReasonAgentAuth, APIStatus: 401,
				Error: "agent could not use the API: 401 authentication_failed (after 1 retry)"},
			kinds: []Kind{KindInit, KindRetry, KindFinal},
		},
		{
			// --max-turns 2: the CLI says num_turns 3 and "Reached maximum number of turns (2)".
			run: "maxturns",
			outcome: Outcome{Subtype: SubtypeMaxTurns, Reason: schema.ReasonMaxTurns, Turns: 3, CostUSD: 0.002276,
				InputTokens: 240 + 60 + 80, OutputTokens: 50,
				Error: "agent stopped: reached the maximum number of turns (2)"},
			kinds: []Kind{KindInit, KindUsage, KindFinal},
		},
		{
			run: "denied",
			outcome: Outcome{Success: true, Subtype: "success", Output: "I could not run that.", Turns: 3, CostUSD: 0.0034139999999999995,
				InputTokens: 360 + 90 + 120, OutputTokens: 75, PermissionDenials: denied},
			kinds: []Kind{KindInit, KindDenial, KindDenial, KindUsage, KindFinal},
		},
		{
			run: "push",
			outcome: Outcome{Subtype: "success", Reason: schema.ReasonAgentPushed, AgentPushed: true, Output: "Pushed.",
				Turns: 2, CostUSD: 0.002276, InputTokens: 240 + 60 + 80, OutputTokens: 50,
				Error: `the agent pushed branch "main" itself (in /tmp/wtb/work-push); only Kiln's git step may push, so the build fails`},
			kinds: []Kind{KindInit, KindPushed, KindUsage, KindFinal},
		},
		{
			// A 529 retried once, then answered: the retry is no failure.
			run: "recovered",
			outcome: Outcome{Success: true, Subtype: "success", Output: "All good now.", Turns: 1, CostUSD: 0.001138,
				InputTokens: 120 + 30 + 40, OutputTokens: 25},
			kinds: []Kind{KindInit, KindRetry, KindUsage, KindFinal},
		},
		{
			run: "success",
			outcome: Outcome{Success: true, Subtype: "success", Output: "Updated hello.txt.", Turns: 3, CostUSD: 0.0034139999999999995,
				InputTokens: 360 + 90 + 120, OutputTokens: 75},
			kinds: []Kind{KindInit, KindUsage, KindFinal},
		},
		{
			// SIGTERM while the third API call stalled: no result line. The
			// usage is summed from the two messages (three lines: text and
			// tool_use of the first share its id); output tokens are as the
			// CLI printed them at each message's start, cost is unknown.
			run: "killed-mid",
			outcome: Outcome{Reason: schema.ReasonAgentError, Error: NoResultMessage, Output: "Reading a.txt first.", Turns: 2,
				InputTokens: 2 * (120 + 30 + 40), OutputTokens: 2,
				PermissionDenials: []PermissionDenial{{ToolName: "Bash", ToolUseID: "toolu_2",
					Input:  `{"command":"rm -rf build && mkdir build","description":"Clean the build folder"}`,
					Reason: "This Bash command contains multiple operations. The following parts require approval: rm -rf build, mkdir build"}}},
			kinds: []Kind{KindInit, KindDenial, KindUsage, KindFinal},
		},
	}
	for _, tt := range tests {
		t.Run(tt.run, func(t *testing.T) {
			t.Parallel()
			events := parseAll(t, cliRun(tt.run))
			checkInvariants(t, events)
			var kinds []Kind
			for _, e := range events {
				switch e.Kind {
				case KindText, KindToolCall, KindToolResult:
				default:
					kinds = append(kinds, e.Kind)
				}
			}
			if diff := cmp.Diff(tt.kinds, kinds); diff != "" {
				t.Errorf("event kinds (-want +got):\n%s", diff)
			}
			got := Summarize(events)
			require.NotEmpty(t, got.SessionID)
			want := tt.outcome
			want.SessionID = got.SessionID
			if tt.errPrefix != "" {
				require.True(t, strings.HasPrefix(got.Error, tt.errPrefix), "error %q", got.Error)
				want.Error, want.Output = got.Error, got.Output
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			// The final event says the same as the outcome.
			f := events[len(events)-1].Final
			require.Equal(t, got.Reason, f.Reason)
			require.Equal(t, got.Error, f.Error)
		})
	}
}

// The session id comes from the result when there is one, from the init line otherwise.
func TestClaudeSessionID(t *testing.T) {
	t.Parallel()
	require.Equal(t, "74b6ee36-b528-4614-a326-fdfaef4ea09e", Summarize(parseAll(t, cliRun("killed-401"))).SessionID, "from the init line")
	require.Equal(t, "a6b85617-8542-42b4-8d0a-f99a0cb21c76", Summarize(parseAll(t, cliRun("success"))).SessionID, "from the result")
}

func TestClaudeInit(t *testing.T) {
	t.Parallel()
	events := parseAll(t, []byte(cliInit))
	require.Equal(t, KindInit, events[0].Kind)
	in := events[0].Init
	require.Equal(t, "2.1.328", in.Version)
	require.Equal(t, "default", in.PermissionMode)
	require.Equal(t, "claude-opus-5-5", in.Model)
	require.Equal(t, "74b6ee36-b528-4614-a326-fdfaef4ea09e", in.SessionID)
	require.Subset(t, in.Tools, []string{"Bash", "Read", "Edit", "Write", "WebFetch", "Task"})
	require.NotContains(t, in.Tools, "LS", "2.1.328 has no LS tool")
	require.NotContains(t, in.Tools, "MultiEdit")
	require.Len(t, in.Tools, 22)

	typ, payload := schemaEvent(t, events[0])
	require.Equal(t, schema.EventLog, typ)
	var lp schema.LogPayload
	require.NoError(t, json.Unmarshal(payload, &lp))
	require.Equal(t, schema.LogPayload{Level: schema.LogInfo,
		Message:   "agent session started: version 2.1.328, model claude-opus-5-5, permission mode default",
		SessionID: in.SessionID, Model: in.Model, AgentVersion: "2.1.328", PermissionMode: "default", Tools: in.Tools}, lp)
}

func TestClaudeRetryEvents(t *testing.T) {
	t.Parallel()
	var retries []Retry
	for _, e := range parseAll(t, cliRun("api-401")) {
		if e.Kind == KindRetry {
			retries = append(retries, *e.Retry)
		}
	}
	want := []Retry{
		{Attempt: 1, MaxRetries: 2, DelayMS: 503, Status: 401, Error: "authentication_failed"},
		{Attempt: 2, MaxRetries: 2, DelayMS: 1141, Status: 401, Error: "authentication_failed"},
	}
	if diff := cmp.Diff(want, retries); diff != "" {
		t.Fatalf("retries (-want +got):\n%s", diff)
	}
	require.True(t, retries[0].Permanent())
	_, payload := schemaEvent(t, Event{Kind: KindRetry, Retry: &retries[0]})
	require.JSONEq(t, `{"attempt":1,"max_retries":2,"delay_ms":503,"status":401,"error":"authentication_failed"}`, string(payload))

	// A refused connection has no status (null on the wire): 0, not permanent.
	for _, e := range parseAll(t, cliRun("api-conn")) {
		if e.Kind == KindRetry {
			require.Equal(t, Retry{Attempt: 1, MaxRetries: 1, DelayMS: 617, Error: "unknown"}, *e.Retry)
			require.False(t, e.Retry.Permanent())
			require.Equal(t, schema.ReasonAgentUnavailable, e.Retry.Reason())
		}
	}
}

func TestRetryPermanent(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]struct {
		permanent bool
		reason    schema.Reason
	}{
		400: {true, schema.ReasonAgentBadRequest}, 401: {true, schema.ReasonAgentAuth}, 403: {true, schema.ReasonAgentAuth},
		404: {false, schema.ReasonAgentBadRequest}, 408: {false, schema.ReasonAgentUnavailable},
		429: {false, schema.ReasonAgentUnavailable}, 500: {false, schema.ReasonAgentUnavailable},
		502: {false, schema.ReasonAgentUnavailable}, 529: {false, schema.ReasonAgentUnavailable},
		0: {false, schema.ReasonAgentUnavailable}, 418: {false, schema.ReasonAgentError},
	} {
		r := Retry{Status: status}
		require.Equal(t, want.permanent, r.Permanent(), "status %d", status)
		require.Equal(t, want.reason, r.Reason(), "status %d", status)
	}
}

func TestClaudeDenialEvents(t *testing.T) {
	t.Parallel()
	var payloads []string
	for _, e := range parseAll(t, cliRun("denied")) {
		if e.Kind == KindDenial {
			typ, p := schemaEvent(t, e)
			require.Equal(t, schema.EventPermissionDenied, typ)
			payloads = append(payloads, string(p))
		}
	}
	require.Len(t, payloads, 2)
	require.JSONEq(t, `{"tool_use_id":"toolu_1","tool":"Bash","summary":"curl -s http://127.0.0.1:9/ | sh",
		"reason":"This Bash command contains multiple operations. The following parts require approval: curl -s http://127.0.0.1:9/, sh"}`, payloads[0])
	require.JSONEq(t, `{"tool_use_id":"toolu_2","tool":"Write","summary":"/etc/kiln-denied.txt",
		"reason":"Claude requested permissions to write to /etc/kiln-denied.txt, but you haven't granted it yet."}`, payloads[1])
}

func TestDenialSummary(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("echo é; ", 100)
	cut, _ := Truncate(`{"command":"npm test -- --watch=false","description":"`+strings.Repeat("d", 5000)+`"}`, MaxSummaryBytes)
	for input, want := range map[string]string{
		`{"command":"git push origin HEAD","description":"push"}`: "git push origin HEAD",
		`{"file_path":"/etc/kiln-denied.txt","content":"x"}`:      "/etc/kiln-denied.txt",
		`{"content":"x","file_path":"a/b.txt"}`:                   "a/b.txt",
		`{"url":"https://example.com/x","prompt":"read it"}`:      "https://example.com/x",
		`{"pattern":"TODO","path":"src"}`:                         "TODO",
		`{"notebook_path":"n.ipynb","new_source":"x"}`:            "n.ipynb",
		`{"command":"make \\\n  test\n\tlint"}`:                   "make \\ test lint",
		`{"command":"` + long + `"}`:                              clipText(strings.TrimSpace(long), MaxDenialSummaryBytes),
		cut:                                                       "npm test -- --watch=false", // an input cut short still yields its command
		`{"todos":[1,2]}`:                                         `{"todos":[1,2]}`,
		`{"command":""}`:                                          `{"command":""}`,
		`not json`:                                                "not json",
		``:                                                        "",
	} {
		got := PermissionDenial{Input: input}.Summary()
		require.Equal(t, want, got, "input %.80s", input)
		require.LessOrEqual(t, len(got), MaxDenialSummaryBytes)
	}
	s := PermissionDenial{Input: `{"command":"` + long + `"}`}.Summary()
	require.True(t, strings.HasSuffix(s, "…"), s)
}

// A run that ends without any Final event observed (the runner cut the
// stream) still names its cause as the parser would have.
func TestRecorderWithoutFinal(t *testing.T) {
	t.Parallel()
	events := parseAll(t, cliRun("killed-401"))
	withFinal := Summarize(events)
	withoutFinal := Summarize(events[:len(events)-1])
	require.Equal(t, withFinal.Reason, withoutFinal.Reason)
	require.Equal(t, withFinal.Error, withoutFinal.Error)
	require.Equal(t, 401, withoutFinal.APIStatus)
	require.Equal(t, "74b6ee36-b528-4614-a326-fdfaef4ea09e", withoutFinal.SessionID)

	retry := Event{Kind: KindRetry, Retry: &Retry{Attempt: 1, MaxRetries: 10, DelayMS: 500, Status: 529, Error: "overloaded"}}
	for name, tt := range map[string]struct {
		events []Event
		reason schema.Reason
		err    string
		pushed bool
	}{
		"nothing":                {nil, schema.ReasonAgentError, NoResultMessage, false},
		"a retry":                {[]Event{retry}, schema.ReasonAgentUnavailable, "agent could not use the API: 529 overloaded (after 1 retry)", false},
		"two retries":            {[]Event{retry, retry}, schema.ReasonAgentUnavailable, "agent could not use the API: 529 overloaded (after 2 retries)", false},
		"a retry, then answered": {[]Event{retry, {Kind: KindText, Text: "hi"}}, schema.ReasonAgentError, NoResultMessage, false},
		"no answer": {[]Event{{Kind: KindRetry, Retry: &Retry{Attempt: 1, Error: "unknown"}}}, schema.ReasonAgentUnavailable,
			"agent could not reach the API: no answer (after 1 retry)", false},
		"pushed": {[]Event{{Kind: KindPushed, Text: "the agent pushed branch \"main\" itself"}}, schema.ReasonAgentError,
			NoResultMessage + "; and the agent pushed branch \"main\" itself", true},
	} {
		o := Summarize(tt.events)
		require.False(t, o.Success, name)
		require.Equal(t, tt.reason, o.Reason, name)
		require.Equal(t, tt.err, o.Error, name)
		require.Equal(t, tt.pushed, o.AgentPushed, name)
	}
}

// A success whose Final did not know of the push (another adapter) is still
// a failure once the Recorder saw the push.
func TestRecorderPushOverridesSuccess(t *testing.T) {
	t.Parallel()
	o := Summarize([]Event{{Kind: KindPushed, Text: "the agent pushed"}, {Kind: KindFinal, Final: &Final{Success: true, Subtype: "success"}}})
	require.False(t, o.Success)
	require.True(t, o.AgentPushed)
	require.Equal(t, schema.ReasonAgentPushed, o.Reason)
	require.Equal(t, "the agent pushed; only Kiln's git step may push, so the build fails", o.Error)
}

func TestOutcomeApply(t *testing.T) {
	t.Parallel()
	var r schema.BuildResult
	Summarize(parseAll(t, cliRun("denied"))).Apply(&r)
	require.Equal(t, schema.BuildResult{
		Success:   true,
		Output:    "I could not run that.",
		Usage:     &schema.Usage{CostUSD: 0.0034139999999999995, Turns: 3, InputTokens: 570, OutputTokens: 75},
		SessionID: "b901bec6-d758-43dc-b3a4-8e0d5448c168",
		PermissionDenials: []schema.PermissionDenial{
			{Tool: "Bash", Summary: "curl -s http://127.0.0.1:9/ | sh"},
			{Tool: "Write", Summary: "/etc/kiln-denied.txt"},
		},
	}, r)

	r = schema.BuildResult{}
	Summarize(parseAll(t, cliRun("killed-401"))).Apply(&r)
	require.Equal(t, schema.BuildResult{
		Reason: schema.ReasonAgentAuth, Error: "agent could not use the API: 401 authentication_failed (after 1 retry)",
		Usage: &schema.Usage{}, SessionID: "74b6ee36-b528-4614-a326-fdfaef4ea09e",
	}, r)

	// Without any event, the outcome is a failure.
	o := Summarize([]Event{{Kind: KindText, Text: "partial"}})
	require.False(t, o.Success)
	require.Equal(t, NoResultMessage, o.Error)
	require.Equal(t, "partial", o.Output)
}

// The push line of the real run maps to a warning event, and the result's
// success does not hide it.
func TestClaudePushEvent(t *testing.T) {
	t.Parallel()
	events := parseAll(t, cliRun("push"))
	var pushed []Event
	for _, e := range events {
		if e.Kind == KindPushed {
			pushed = append(pushed, e)
		}
	}
	require.Len(t, pushed, 1)
	require.Equal(t, `the agent pushed branch "main" itself (in /tmp/wtb/work-push)`, pushed[0].Text)
	_, payload := schemaEvent(t, pushed[0])
	require.JSONEq(t, `{"level":"warn","message":"the agent pushed branch \"main\" itself (in /tmp/wtb/work-push)"}`, string(payload))
	f := events[len(events)-1].Final
	require.False(t, f.Success)
	require.True(t, f.AgentPushed)

	// A failed run whose agent pushed keeps its reason and says both.
	lines := bytes.Replace(cliRun("push"), []byte(`"is_error":false,"num_turns":2,"subtype":"success"`),
		[]byte(`"is_error":true,"num_turns":2,"subtype":"error_during_execution"`), 1)
	o := Summarize(parseAll(t, lines))
	require.Equal(t, schema.ReasonAgentError, o.Reason)
	require.True(t, o.AgentPushed)
	require.Equal(t, `agent failed (error_during_execution): Pushed.; and the agent pushed branch "main" itself (in /tmp/wtb/work-push)`, o.Error)
}

func TestClaudeNotices(t *testing.T) {
	t.Parallel()
	// informational lines, in the shapes 2.1.328 writes them.
	events := parseAll(t, []byte(strings.Join([]string{
		`{"type":"system","subtype":"informational","content":"A hook didn't answer in time.","level":"warning","tag":"hook","uuid":"u1","session_id":"s"}`,
		`{"type":"system","subtype":"informational","content":"Model switched.","level":"notice","uuid":"u2","session_id":"s"}`,
		`{"type":"system","subtype":"informational","content":"","level":"info"}`,
		`{"type":"system","subtype":"vcs_state_changed","kind":"commit","branch":"main"}`,
	}, "\n")))
	checkInvariants(t, events)
	require.Len(t, events, 3) // two notices, the final
	require.Equal(t, &Notice{Level: schema.LogWarn, Text: "A hook didn't answer in time."}, events[0].Notice)
	require.Equal(t, &Notice{Level: schema.LogInfo, Text: "Model switched."}, events[1].Notice)
	_, payload := schemaEvent(t, events[0])
	require.JSONEq(t, `{"level":"warn","message":"agent: A hook didn't answer in time."}`, string(payload))
}
