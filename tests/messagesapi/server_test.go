package messagesapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// post sends a Messages API request for session with n assistant messages in
// its history.
func post(t *testing.T, srv *messagesapi.Server, session string, assistants int, stream bool) *http.Response {
	t.Helper()
	msgs := []map[string]any{{"role": "user", "content": "hello"}}
	for range assistants {
		msgs = append(msgs, map[string]any{"role": "assistant", "content": []map[string]any{{"type": "text", "text": "x"}}},
			map[string]any{"role": "user", "content": []map[string]any{{"type": "tool_result", "tool_use_id": "t", "content": "out"}}})
	}
	body, _ := json.Marshal(map[string]any{"model": "m-1", "stream": stream, "messages": msgs,
		"tools": []map[string]any{{"name": "Read"}}})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL()+"/v1/messages?beta=true", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("X-Claude-Code-Session-Id", session)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

type sse struct {
	event string
	data  map[string]any
}

func readSSE(t *testing.T, r io.Reader) []sse {
	t.Helper()
	var out []sse
	sc := bufio.NewScanner(r)
	var ev string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			ev = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m))
			require.Equal(t, ev, m["type"], "event name and data type agree")
			out = append(out, sse{ev, m})
		}
	}
	return out
}

func TestStreamIsInTheAPIsOrder(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "s", Turns: []messagesapi.Turn{{
		Text:  "Reading the page, then a long explanation that is streamed in several pieces.",
		Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": "index.html", "limit": 20.0}}},
		Usage: messagesapi.Usage{InputTokens: 7, OutputTokens: 33, CacheReadInputTokens: 5},
	}}})
	resp := post(t, srv, "s1", 0, true)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	evs := readSSE(t, resp.Body)

	var names []string
	for _, e := range evs {
		if len(names) == 0 || names[len(names)-1] != e.event || e.event != "content_block_delta" {
			names = append(names, e.event)
		}
	}
	assert.Equal(t, []string{"message_start", "ping",
		"content_block_start", "content_block_delta", "content_block_stop",
		"content_block_start", "content_block_delta", "content_block_stop",
		"message_delta", "message_stop"}, names)

	var text, js strings.Builder
	deltas := 0
	for _, e := range evs {
		if e.event != "content_block_delta" {
			continue
		}
		deltas++
		d := e.data["delta"].(map[string]any)
		switch d["type"] {
		case "text_delta":
			text.WriteString(d["text"].(string))
		case "input_json_delta":
			js.WriteString(d["partial_json"].(string))
		}
	}
	assert.Greater(t, deltas, 3, "text and JSON come in pieces")
	assert.Equal(t, "Reading the page, then a long explanation that is streamed in several pieces.", text.String())
	var input map[string]any
	require.NoError(t, json.Unmarshal([]byte(js.String()), &input))
	assert.Equal(t, map[string]any{"file_path": "index.html", "limit": 20.0}, input)

	start := evs[0].data["message"].(map[string]any)
	assert.Equal(t, "m-1", start["model"])
	assert.EqualValues(t, 7, start["usage"].(map[string]any)["input_tokens"])
	tool := evs[0]
	for _, e := range evs {
		if e.event == "content_block_start" && e.data["content_block"].(map[string]any)["type"] == "tool_use" {
			tool = e
		}
	}
	assert.Equal(t, "Read", tool.data["content_block"].(map[string]any)["name"])
	var delta map[string]any
	for _, e := range evs {
		if e.event == "message_delta" {
			delta = e.data
		}
	}
	assert.Equal(t, "tool_use", delta["delta"].(map[string]any)["stop_reason"])
	assert.EqualValues(t, 33, delta["usage"].(map[string]any)["output_tokens"])
}

func TestNonStreamingAndPastTheScript(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "one", Turns: []messagesapi.Turn{{Text: "first"}}})
	resp := post(t, srv, "a", 0, false)
	var msg struct {
		ID         string `json:"id"`
		StopReason string `json:"stop_reason"`
		Content    []struct{ Type, Text string }
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&msg))
	assert.Equal(t, "end_turn", msg.StopReason)
	require.Len(t, msg.Content, 1)
	assert.Equal(t, "first", msg.Content[0].Text)

	resp = post(t, srv, "a", 1, false)
	var past struct {
		ID      string `json:"id"`
		Content []struct{ Text string }
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&past))
	assert.Equal(t, "done", past.Content[0].Text, "past its script the conversation ends")
	assert.NotEqual(t, msg.ID, past.ID, "every turn has its own message id (the CLI merges equal ids)")

	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, []int{0, 1}, []int{reqs[0].Turn, reqs[1].Turn})
	assert.Equal(t, "out", reqs[1].ToolResults[0].Content)
}

func TestErrorsInTheAPIsShape(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status     int
		wantType   string
		retryAfter int
	}{
		{400, "invalid_request_error", 0},
		{401, "authentication_error", 0},
		{403, "permission_error", 0},
		{429, "rate_limit_error", 7},
		{500, "api_error", 0},
		{529, "overloaded_error", 0},
	} {
		srv := messagesapi.Start(t)
		srv.Enqueue(messagesapi.Script{Name: "e", Turns: []messagesapi.Turn{
			{Text: "after the errors", Error: &messagesapi.APIError{Status: tc.status, RetryAfter: tc.retryAfter, Times: 2}},
		}})
		for attempt := range 3 {
			resp := post(t, srv, "s", 0, false)
			if attempt == 2 {
				assert.Equal(t, 200, resp.StatusCode, "served normally after Times errors")
				continue
			}
			require.Equal(t, tc.status, resp.StatusCode)
			var e struct {
				Type  string
				Error struct{ Type, Message string }
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
			assert.Equal(t, "error", e.Type)
			assert.Equal(t, tc.wantType, e.Error.Type)
			assert.NotEmpty(t, e.Error.Message)
			if tc.retryAfter > 0 {
				assert.Equal(t, "7", resp.Header.Get("retry-after"))
			} else {
				assert.Empty(t, resp.Header.Get("retry-after"))
			}
		}
	}
}

func TestConversationsTakeScriptsInOrder(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "A", Turns: []messagesapi.Turn{{Text: "a0"}, {Text: "a1"}}},
		messagesapi.Script{Name: "B", Turns: []messagesapi.Turn{{Text: "b0"}}})
	text := func(resp *http.Response) string {
		var m struct{ Content []struct{ Text string } }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		return m.Content[0].Text
	}
	assert.Equal(t, "a0", text(post(t, srv, "first", 0, false)))
	assert.Equal(t, "b0", text(post(t, srv, "second", 0, false)))
	assert.Equal(t, "a1", text(post(t, srv, "first", 1, false)))
	assert.Equal(t, "done", text(post(t, srv, "third", 0, false)), "no script left")
	var convs []int
	var scripts []string
	for _, q := range srv.Requests() {
		convs, scripts = append(convs, q.Conversation), append(scripts, q.Script)
	}
	assert.Equal(t, []int{1, 2, 1, 3}, convs)
	assert.Equal(t, []string{"A", "B", "A", ""}, scripts)
}

func TestSideRequestsTakeNoScript(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "main", Turns: []messagesapi.Turn{{Text: "main answer"}}})
	resp, err := http.Post(srv.URL()+"/v1/messages/count_tokens", "application/json", strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	var ct struct {
		InputTokens int `json:"input_tokens"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ct))
	resp.Body.Close()
	assert.Positive(t, ct.InputTokens)
	resp, err = http.Post(srv.URL()+"/v1/messages", "application/json", strings.NewReader(`{"model":"small","messages":[{"role":"user","content":"title?"}]}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)

	var m struct{ Content []struct{ Text string } }
	require.NoError(t, json.NewDecoder(post(t, srv, "s", 0, false).Body).Decode(&m))
	assert.Equal(t, "main answer", m.Content[0].Text, "the script was still there")
	var kinds []string
	for _, q := range srv.Requests() {
		kinds = append(kinds, q.Kind)
	}
	assert.Equal(t, []string{"count_tokens", "side", "turn"}, kinds)
}

func TestStallEndsWhenTheClientGoes(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "stall", Turns: []messagesapi.Turn{{Stall: time.Hour}}})
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL()+"/v1/messages",
		strings.NewReader(`{"stream":true,"tools":[{"name":"Read"}],"messages":[{"role":"user","content":"x"}]}`))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()

	require.Eventually(t, func() bool {
		q := srv.Requests()
		return len(q) == 1 && q[0].Stalled && q[0].InFlight
	}, 5*time.Second, 10*time.Millisecond, "a stalled request shows while it stalls")
	cancel()
	require.Error(t, <-errc)
	require.Eventually(t, func() bool { return !srv.Requests()[0].InFlight }, 5*time.Second, 10*time.Millisecond)
	q := srv.Requests()[0]
	assert.True(t, q.Stalled)
	assert.Equal(t, 0, q.Status, "no answer: the client went away")
}

func TestScriptFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "s.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"turns":[{"text":"hi","stall":"1.5s","times":1,"drop_after":"message_delta",
		"error":{"status":429,"retry_after":3,"times":2},"usage":{"input_tokens":9}}]}`), 0o644))
	s, err := messagesapi.LoadScript(file)
	require.NoError(t, err)
	assert.Equal(t, file, s.Name)
	want := messagesapi.Turn{Text: "hi", Stall: 1500 * time.Millisecond, Times: 1, DropAfter: "message_delta",
		Error: &messagesapi.APIError{Status: 429, RetryAfter: 3, Times: 2}, Usage: messagesapi.Usage{InputTokens: 9}}
	assert.Equal(t, []messagesapi.Turn{want}, s.Turns)
	b, err := json.Marshal(s)
	require.NoError(t, err)
	var back messagesapi.Script
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, s, back)

	for body, wantErr := range map[string]string{
		`{"turns":[{"drop_after":"somewhere"}]}`:                       `drop_after "somewhere"`,
		`{"turns":[{"error":{"status":200}}]}`:                         "error.status 200",
		`{"turns":[{"tools":[{"input":{}}]}]}`:                         "tools[0].name: required",
		`{"turns":[{"stall":"soon"}]}`:                                 "stall",
		`{"turns":[{"text":"a"},{"error":{"status":401,"times":-1}}]}`: "turns[1]: error.times -1",
	} {
		require.NoError(t, os.WriteFile(file, []byte(body), 0o644))
		_, err := messagesapi.LoadScript(file)
		require.ErrorContains(t, err, wantErr, body)
	}
	_, err = messagesapi.LoadScript(filepath.Join(dir, "missing.json"))
	require.ErrorContains(t, err, "missing.json")

	demo, err := messagesapi.LoadScript("scripts/demo.json")
	require.NoError(t, err)
	assert.Equal(t, "demo", demo.Name)
	require.Len(t, demo.Turns, 3)
	assert.Equal(t, "Edit", demo.Turns[1].Tools[0].Name)
}

// postConv sends a request whose messages are given, for session.
func postConv(t *testing.T, srv *messagesapi.Server, session string, msgs []map[string]any) *http.Response {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "m-1", "stream": false, "messages": msgs,
		"tools": []map[string]any{{"name": "Read"}}})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL()+"/v1/messages", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("X-Claude-Code-Session-Id", session)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func text(t *testing.T, resp *http.Response) string {
	t.Helper()
	var m struct{ Content []struct{ Text string } }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	require.NotEmpty(t, m.Content)
	return m.Content[0].Text
}

// A resumed run (the same session, the earlier conversation, a new prompt)
// is a conversation of its own: it takes the next script, from turn 0, and
// its Expect sees the earlier conversation.
func TestResumedRunTakesTheNextScript(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "first", Turns: []messagesapi.Turn{{Text: "read it", Tools: []messagesapi.ToolUse{{Name: "Read"}}}, {Text: "first done"}}},
		messagesapi.Script{Name: "followup", Turns: []messagesapi.Turn{{Text: "continued", Expect: []string{"Fix the heading", "first done"}}}},
		messagesapi.Script{Name: "lacking", Turns: []messagesapi.Turn{{Text: "never", Expect: []string{"no such text", "first done"}}}})
	user := func(s string) map[string]any {
		return map[string]any{"role": "user", "content": []map[string]any{{"type": "text", "text": "<system-reminder>x</system-reminder>"}, {"type": "text", "text": s}}}
	}
	asst := func(s string) map[string]any {
		return map[string]any{"role": "assistant", "content": []map[string]any{{"type": "text", "text": s}}}
	}
	result := map[string]any{"role": "user", "content": []map[string]any{{"type": "tool_result", "tool_use_id": "t", "content": "<h1>Hello</h1>"}}}
	first := []map[string]any{user("Fix the heading")}
	assert.Equal(t, "read it", text(t, postConv(t, srv, "s1", first)))
	first = append(first, asst("read it"), result)
	assert.Equal(t, "first done", text(t, postConv(t, srv, "s1", first)))
	first = append(first, asst("first done"))

	// The follow-up: same session, the earlier conversation, a new prompt.
	resumed := append(append([]map[string]any{}, first...), user("Now the footer"))
	assert.Equal(t, "continued", text(t, postConv(t, srv, "s1", resumed)))
	resumed = append(resumed, asst("continued"))
	assert.Equal(t, "done", text(t, postConv(t, srv, "s1", resumed)), "past its script")

	// Another follow-up whose expectation fails: a 400 naming the missing text.
	again := append(append([]map[string]any{}, resumed...), user("And the title"))
	resp := postConv(t, srv, "s1", again)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var e struct {
		Error struct{ Type, Message string }
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	assert.Equal(t, "invalid_request_error", e.Error.Type)
	assert.Equal(t, `stand-in Messages API: the conversation does not contain "no such text"`, e.Error.Message)

	reqs := srv.Requests()
	require.Len(t, reqs, 5)
	type row struct {
		conv          int
		script        string
		turn, earlier int
		prompt        string
	}
	var got []row
	for _, q := range reqs {
		got = append(got, row{q.Conversation, q.Script, q.Turn, q.Earlier, q.Prompt})
	}
	assert.Equal(t, []row{
		{1, "first", 0, 0, "Fix the heading"}, {1, "first", 1, 0, "Fix the heading"},
		{2, "followup", 0, 2, "Now the footer"}, {2, "followup", 1, 2, "Now the footer"},
		{3, "lacking", 0, 3, "And the title"},
	}, got)
	assert.Equal(t, []string{"no such text"}, reqs[4].Missing)
	assert.Empty(t, reqs[2].Missing)
}

// With --max-budget-usd the CLI puts a system message ("USD budget: …")
// after the tool results: they are still the request's.
func TestToolResultsBeforeASystemMessage(t *testing.T) {
	t.Parallel()
	srv := messagesapi.Start(t)
	srv.Enqueue(messagesapi.Script{Name: "s", Turns: []messagesapi.Turn{{Text: "a"}, {Text: "b"}}})
	msgs := []map[string]any{
		{"role": "user", "content": "Fix it"},
		{"role": "assistant", "content": []map[string]any{{"type": "tool_use", "id": "t1", "name": "Read", "input": map[string]any{}}}},
		{"role": "user", "content": []map[string]any{{"type": "tool_result", "tool_use_id": "t1", "content": "file text"}}},
		{"role": "system", "content": "USD budget: $0.0056/$5; $4.9944 remaining"},
	}
	assert.Equal(t, "b", text(t, postConv(t, srv, "s", msgs)))
	reqs := srv.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, []messagesapi.ToolResult{{ToolUseID: "t1", Content: "file text"}}, reqs[0].ToolResults)
	assert.Equal(t, "Fix it", reqs[0].Prompt)
	assert.Equal(t, 1, reqs[0].Turn)
}
