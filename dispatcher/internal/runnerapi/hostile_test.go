package runnerapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/runnerapi"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

// rig is a dispatcher and a server of the runner protocol: the
// dispatcher's own, or one with other options on the same database.
type rig struct {
	*apptest.Env
	t   *testing.T
	url string
	p   *schema.Project
}

func newRig(t *testing.T, o *runnerapi.Options) *rig {
	t.Parallel()
	e := apptest.New(t, app.Options{})
	r := &rig{Env: e, t: t, url: e.Server.URL, p: e.Project("web")}
	if o != nil {
		o.Pool, o.Lifecycle = e.DB.Pool, e.App.Lifecycle
		srv, err := runnerapi.New(*o)
		require.NoError(t, err)
		router := chi.NewRouter()
		srv.Mount(router)
		hs := httptest.NewServer(router)
		t.Cleanup(hs.Close)
		r.url = hs.URL
	}
	return r
}

// running stores a running build with a runner token, as a launch leaves it.
func (r *rig) running() (id, token string) {
	ctx := context.Background()
	id = r.Pending(r.p.ID, schema.BuildSpec{Prompt: "x"})
	token, hash := auth.NewToken()
	require.NoError(r.t, store.SetRunnerTokenHash(ctx, r.DB.Pool, id, hash))
	_, err := store.TransitionBuild(ctx, r.DB.Pool, id, store.Transition{To: schema.StatusRunning, JobName: "j"})
	require.NoError(r.t, err)
	return id, token
}

type answer struct {
	code    int
	body    []byte
	problem struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
}

// post sends body (JSON of it, or []byte as it is) to the build's runner
// route what ("" is the task, fetched with GET).
func (r *rig) post(id, token, what string, body any) answer {
	r.t.Helper()
	method, u := http.MethodPost, r.url+schema.RunnerAPIPrefix+id+"/"+what
	var rd io.Reader
	switch b := body.(type) {
	case nil:
		method = http.MethodGet
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(r.t, err)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(u, "/"), rd)
	require.NoError(r.t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(r.t, err)
	defer res.Body.Close()
	a := answer{code: res.StatusCode}
	a.body, err = io.ReadAll(res.Body)
	require.NoError(r.t, err)
	if res.StatusCode != 200 {
		require.Equal(r.t, "application/problem+json", res.Header.Get("Content-Type"), "%s", a.body)
		require.NoError(r.t, json.Unmarshal(a.body, &a.problem), "%s", a.body)
		require.Equal(r.t, res.StatusCode, a.problem.Status)
	}
	return a
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	require.Equal(t, 200, a.code, "%s", a.body)
	require.NoError(t, json.Unmarshal(a.body, v), "%s", a.body)
}

// stored returns a build's events after the first two (pending, running).
func (r *rig) stored(id string) []schema.Event {
	r.t.Helper()
	evs, err := store.ListEvents(context.Background(), r.DB.Pool, id, 2, 1000)
	require.NoError(r.t, err)
	return evs
}

func text(s string) schema.EventInput {
	e, _ := schema.NewEventInput(time.Now(), schema.AgentTextPayload{Text: s})
	return e
}

func raw(typ schema.EventType, payload string) schema.EventInput {
	return schema.EventInput{Type: typ, Time: time.Now(), Payload: json.RawMessage(payload)}
}

func batch(n int64, evs ...schema.EventInput) schema.EventBatch {
	return schema.EventBatch{Batch: n, Events: evs}
}

func upload(p string, content []byte) schema.ArtifactUpload {
	sum := sha256.Sum256(content)
	return schema.ArtifactUpload{Path: p, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content)), Content: content}
}

// A runner's status event is refused, and the build's streams (SSE and
// WebSocket) neither end nor show it: they go on until the real end.
func TestStatusEventRefusedStreamsGoOn(t *testing.T) {
	r := newRig(t, nil)
	id, tok := r.running()
	ctx, cancel := context.WithTimeout(context.Background(), apptest.Timeout)
	defer cancel()
	type stream struct {
		events chan schema.Event
		done   chan schema.Status
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	streams := map[string]stream{}
	for _, ws := range []bool{false, true} {
		s := stream{events: make(chan schema.Event, 100), done: make(chan schema.Status, 1)}
		streams[map[bool]string{false: "SSE", true: "WebSocket"}[ws]] = s
		wg.Go(func() {
			st, err := r.Client.Watch(ctx, id, client.WatchOptions{WebSocket: ws, Show: func(e schema.Event) { s.events <- e }})
			if err == nil {
				s.done <- st
			}
			close(s.done)
		})
	}
	waitFor := func(name string, s stream, what string, ok func(schema.Event) bool) {
		t.Helper()
		for {
			select {
			case e := <-s.events:
				if p, isStatus := schema.PayloadAs[schema.StatusPayload](e); isStatus && p.Status.Terminal() {
					t.Fatalf("%s showed a terminal status event (seq %d) while waiting for %s", name, e.Seq, what)
				}
				if ok(e) {
					return
				}
			case st := <-s.done:
				t.Fatalf("%s ended (%q) while waiting for %s", name, st, what)
			case <-ctx.Done():
				t.Fatalf("%s: no %s", name, what)
			}
		}
	}
	for name, s := range streams {
		waitFor(name, s, "the running status", func(e schema.Event) bool {
			p, ok := schema.PayloadAs[schema.StatusPayload](e)
			return ok && p.Status == schema.StatusRunning
		})
	}

	a := r.post(id, tok, "events", batch(1, text("working"), raw(schema.EventStatus, `{"status":"completed"}`)))
	require.Equal(t, 422, a.code, "%s", a.body)
	assert.Equal(t, `events[1].type: "status" is written by the dispatcher, not a runner`, a.problem.Detail)
	var ack schema.EventBatchAck
	r.post(id, tok, "events", batch(1, text("still working"))).decode(t, &ack)
	assert.Equal(t, schema.EventBatchAck{Stored: 1, Status: schema.StatusRunning}, ack, "the refused batch's number is free")
	for name, s := range streams {
		waitFor(name, s, "the next event", func(e schema.Event) bool { return e.Type == schema.EventAgentText })
	}
	assert.Equal(t, schema.StatusRunning, r.Get(id).Status)

	var rack schema.ResultAck
	r.post(id, tok, "result", schema.BuildResult{Success: true, Output: "done"}).decode(t, &rack)
	require.True(t, rack.Accepted)
	for name, s := range streams {
		select {
		case st := <-s.done:
			assert.Equal(t, schema.StatusCompleted, st, name)
		case <-ctx.Done():
			t.Fatalf("%s did not end", name)
		}
		var last schema.Event
		for len(s.events) > 0 {
			last = <-s.events
		}
		p, _ := schema.PayloadAs[schema.StatusPayload](last)
		assert.Equal(t, schema.StatusCompleted, p.Status, "%s ended with the dispatcher's status event", name)
	}
	evs := r.stored(id)
	require.Len(t, evs, 2)
	assert.Equal(t, schema.EventAgentText, evs[0].Type)
	assert.JSONEq(t, `{"status":"completed","error":""}`, string(evs[1].Payload), "the only status event after running is the dispatcher's")
}

// A batch with a bad event is refused whole, naming the event, its type and
// the field; nothing of it is stored and its number stays free.
func TestBadEventsStoreNothing(t *testing.T) {
	r := newRig(t, nil)
	id, tok := r.running()
	for _, c := range []struct {
		events []schema.EventInput
		detail string
	}{
		{[]schema.EventInput{raw("bogus", `{}`)}, `events[0].type: "bogus" is not an event type a runner may send`},
		{[]schema.EventInput{text("a"), raw(schema.EventInfo, `{"message":"waiting"}`)}, `events[1].type: "info" is written by the dispatcher, not a runner`},
		{[]schema.EventInput{text("a"), text("b"), raw(schema.EventAgentText, `{"text":5}`)}, `events[2].payload.text: must be a string (agent_text event)`},
		{[]schema.EventInput{raw(schema.EventToolCall, `{"name":"Edit","extra":1}`)}, `events[0].payload.extra: not a field (tool_call event)`},
		{[]schema.EventInput{raw(schema.EventToolCall, `{"NAME":"Edit"}`)}, `events[0].payload.NAME: not a field (tool_call event)`},
		{[]schema.EventInput{raw(schema.EventLog, `"a line"`)}, `events[0].payload: must be a JSON object (log event)`},
		{[]schema.EventInput{raw(schema.EventLog, `{"message":"m"}`)}, `events[0].payload.level: required (log event)`},
		{[]schema.EventInput{raw(schema.EventAgentText, `{"text":"a","sanitized":true}`)}, `events[0].payload.sanitized: not a field (agent_text event)`},
		{[]schema.EventInput{text("a"), raw(schema.EventAgentRetry, `{"attempt":0,"max_retries":1,"delay_ms":1,"status":401,"error":"e"}`)},
			`events[1].payload.attempt: must be at least 1, not 0 (agent_retry event)`},
		{[]schema.EventInput{raw(schema.EventPermissionDenied, `{"tool":"Bash","summary":"s"}`)}, `events[0].payload.reason: required (permission_denied event)`},
	} {
		a := r.post(id, tok, "events", batch(1, c.events...))
		require.Equal(t, 422, a.code, "%s", a.body)
		assert.True(t, strings.HasPrefix(a.problem.Detail, c.detail), "%q, want %q", a.problem.Detail, c.detail)
	}
	assert.Empty(t, r.stored(id), "nothing stored")
	var ack schema.EventBatchAck
	r.post(id, tok, "events", batch(1, text("ok"))).decode(t, &ack)
	assert.Equal(t, schema.EventBatchAck{Stored: 1, Status: schema.StatusRunning}, ack, "batch 1 was never taken")
}

// The agent's retries and denials are stored as the runner sends them, and
// a result's typed agent reason, denials and session id settle the build.
func TestAgentEventsAndResult(t *testing.T) {
	r := newRig(t, nil)
	id, tok := r.running()
	retry, _ := schema.NewEventInput(time.Now(), schema.AgentRetryPayload{Attempt: 1, MaxRetries: 10, DelayMS: 503, Status: 401, Error: "authentication_failed"})
	denial, _ := schema.NewEventInput(time.Now(), schema.PermissionDeniedPayload{ToolUseID: "toolu_1", Tool: "Bash",
		Summary: "git push origin HEAD", Reason: "Permission to use Bash with command git push origin HEAD has been denied."})
	start, _ := schema.NewEventInput(time.Now(), schema.LogPayload{Level: schema.LogInfo, Message: "agent session started",
		SessionID: "s1", Model: "claude-opus-5-5", AgentVersion: "2.1.328", PermissionMode: "default", Tools: []string{"Bash", "Read"}})
	var ack schema.EventBatchAck
	r.post(id, tok, "events", batch(1, start, retry, denial)).decode(t, &ack)
	assert.Equal(t, schema.EventBatchAck{Stored: 3, Status: schema.StatusRunning}, ack)
	evs := r.stored(id)
	require.Len(t, evs, 3)
	for i, want := range []schema.EventInput{start, retry, denial} {
		assert.Equal(t, want.Type, evs[i].Type)
		assert.JSONEq(t, string(want.Payload), string(evs[i].Payload))
	}

	a := r.post(id, tok, "events", batch(2, raw(schema.EventAgentRetry, `{"attempt":1,"max_retries":10,"delay_ms":1,"status":1000,"error":"x"}`)))
	require.Equal(t, 422, a.code, "%s", a.body)
	assert.Equal(t, "events[0].payload.status: must be an HTTP status (100-599) or 0 for none, not 1000 (agent_retry event)", a.problem.Detail)

	res := schema.BuildResult{Reason: schema.ReasonAgentAuth, SessionID: "s1",
		Error:             "agent could not use the API: 401 authentication_failed (after 1 retry)",
		PermissionDenials: []schema.PermissionDenial{{Tool: "Bash", Summary: "git push origin HEAD"}}}
	var rack schema.ResultAck
	r.post(id, tok, "result", res).decode(t, &rack)
	assert.Equal(t, schema.ResultAck{Status: schema.StatusFailed, Accepted: true}, rack)
	b := r.Get(id)
	assert.Equal(t, schema.ReasonAgentAuth, b.Reason)
	assert.Equal(t, res.Error, b.Error)
	require.NotNil(t, b.Result)
	assert.Equal(t, res.PermissionDenials, b.Result.PermissionDenials)
	assert.Equal(t, "s1", b.Result.SessionID)

	// Each new agent reason is kept; a denial with an unknown key is refused.
	for _, reason := range []schema.Reason{schema.ReasonAgentBadRequest, schema.ReasonAgentUnavailable, schema.ReasonAgentPushed} {
		id, tok := r.running()
		r.post(id, tok, "result", schema.BuildResult{Reason: reason, Error: "e"}).decode(t, &rack)
		assert.Equal(t, reason, r.Get(id).Reason)
	}
	id2, tok2 := r.running()
	a = r.post(id2, tok2, "result", []byte(`{"success":false,"permission_denials":[{"tool":"Bash","summary":"s","input":"{}"}]}`))
	require.Equal(t, 422, a.code, "%s", a.body)
}

// NUL and invalid UTF-8 in what a runner posts are stored as U+FFFD and
// flagged; the batch is stored once (a retry is a duplicate, not a 500).
func TestTextPostgresCannotStoreIsRepaired(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	id, tok := r.running()
	body := []byte(`{"batch":1,"events":[` +
		`{"type":"agent_text","time":"2026-01-01T00:00:00Z","payload":{"text":"before\u0000after"}},` +
		`{"type":"tool_result","time":"2026-01-01T00:00:01Z","payload":{"summary":"bin` + "\xff\xfe" + `ary","is_error":false,"truncated":false,"size":8}},` +
		`{"type":"agent_text","time":"2026-01-01T00:00:02Z","payload":{"text":"clean"}}]}`)
	for i, want := range []schema.EventBatchAck{{Stored: 3, Status: schema.StatusRunning}, {Duplicate: true, Status: schema.StatusRunning}} {
		var ack schema.EventBatchAck
		r.post(id, tok, "events", body).decode(t, &ack)
		assert.Equal(t, want, ack, "post %d", i+1)
	}
	evs := r.stored(id)
	require.Len(t, evs, 3, "stored once")
	var m []map[string]any
	for _, e := range evs {
		var x map[string]any
		require.NoError(t, json.Unmarshal(e.Payload, &x))
		m = append(m, x)
	}
	assert.Equal(t, map[string]any{"text": "before\uFFFDafter", "sanitized": true}, m[0])
	assert.Equal(t, "bin\uFFFD\uFFFDary", m[1]["summary"])
	assert.Equal(t, true, m[1]["sanitized"])
	assert.Equal(t, map[string]any{"text": "clean"}, m[2], "a clean event is not flagged")
	p, err := evs[0].Decode()
	require.NoError(t, err, "a flagged payload still decodes as its type")
	assert.Equal(t, schema.AgentTextPayload{Text: "before\uFFFDafter"}, p)

	// The result: stored with U+FFFD, told by an info event; a retry is a duplicate.
	res := []byte(`{"success":false,"output":"out\u0000put","error":"it` + "\xc3" + ` broke\u0000","files_changed":["a\u0000.txt"],"reason":"agent_error"}`)
	for i, want := range []schema.ResultAck{{Status: schema.StatusFailed, Accepted: true}, {Status: schema.StatusFailed, Accepted: true, Duplicate: true}} {
		var ack schema.ResultAck
		r.post(id, tok, "result", res).decode(t, &ack)
		assert.Equal(t, want, ack, "post %d", i+1)
	}
	b := r.Get(id)
	require.NotNil(t, b.Result)
	assert.Equal(t, "out\uFFFDput", b.Result.Output)
	assert.Equal(t, "it\uFFFD broke\uFFFD", b.Result.Error)
	assert.Equal(t, "it\uFFFD broke\uFFFD", b.Error)
	assert.Equal(t, []string{"a\uFFFD.txt"}, b.Result.FilesChanged)
	assert.Equal(t, schema.ReasonAgentError, b.Reason)
	evs = r.stored(id)
	require.Len(t, evs, 5)
	info, ok := schema.PayloadAs[schema.InfoPayload](evs[3])
	require.True(t, ok, "%s %s", evs[3].Type, evs[3].Payload)
	assert.Contains(t, info.Message, "in error, files_changed, output;")
	assert.Equal(t, schema.EventStatus, evs[4].Type, "told before the build ends")

	// An artifact's path must be exact: refused, not repaired.
	id2, tok2 := r.running()
	a := r.post(id2, tok2, "artifacts", upload("dist/a\x00.txt", []byte("x")))
	require.Equal(t, 422, a.code)
	assert.Equal(t, "path: must not contain NUL (a path must be exact)", a.problem.Detail)
	up, _ := json.Marshal(upload("PLACEHOLDER", []byte("x")))
	a = r.post(id2, tok2, "artifacts", bytes.Replace(up, []byte("PLACEHOLDER"), []byte("dist/\xff.txt"), 1))
	require.Equal(t, 422, a.code)
	assert.Equal(t, "path: must be valid UTF-8 (a path must be exact)", a.problem.Detail)
	var n int
	require.NoError(t, r.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM build_artifacts WHERE build_id = $1`, id2).Scan(&n))
	assert.Zero(t, n)
}

// After the build is terminal every post answers 409, but the result that
// settled it, posted again, is acknowledged as a duplicate. The token works
// for the grace after the end, then answers 401.
func TestAfterTheEnd(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	id, tok := r.running()
	res := schema.BuildResult{Success: true, Output: "ok", FilesChanged: []string{"a"}, Artifacts: []schema.Artifact{}}
	var ack schema.ResultAck
	r.post(id, tok, "result", res).decode(t, &ack)
	require.Equal(t, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true}, ack)

	for _, c := range []struct {
		what   string
		body   any
		detail string
	}{
		{"events", batch(1, text("late")), "build is completed; events are not accepted after the build ended"},
		{"artifacts", upload("late.txt", []byte("late")), "build is completed; artifacts are not accepted after the build ended"},
		{"result", schema.BuildResult{Success: false, Error: "late"}, "build is completed; it ended before this result came, which is not recorded"},
		{"result", schema.BuildResult{Success: true, Output: "ok, said differently"}, "build is completed; it ended before this result came"},
	} {
		a := r.post(id, tok, c.what, c.body)
		require.Equal(t, 409, a.code, "%s: %s", c.what, a.body)
		assert.True(t, strings.HasPrefix(a.problem.Detail, c.detail), "%s: %q", c.what, a.problem.Detail)
	}
	r.post(id, tok, "result", res).decode(t, &ack)
	assert.Equal(t, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true, Duplicate: true}, ack,
		"a retry of the accepted result is no error")
	assert.Empty(t, r.stored(id)[1:], "nothing stored after the terminal status event")
	b := r.Get(id)
	assert.Equal(t, "ok", b.Result.Output)

	var task schema.RunnerTask
	r.post(id, tok, "", nil).decode(t, &task)
	assert.Equal(t, schema.StatusCompleted, task.Status, "within the grace the runner may still see that its build ended")

	// A cancelled build: the runner's late events are refused the same way;
	// its first late result is kept as the build's account (it had none),
	// the status unchanged, and any other is refused.
	id2, tok2 := r.running()
	_, err := r.App.Lifecycle.Cancel(ctx, id2, "by the test")
	require.NoError(t, err)
	a := r.post(id2, tok2, "events", batch(1, text("late")))
	require.Equal(t, 409, a.code)
	assert.Equal(t, "build is cancelled; events are not accepted after the build ended", a.problem.Detail)
	var kept schema.ResultAck
	r.post(id2, tok2, "result", schema.BuildResult{Cancelled: true, Error: "stopped by SIGTERM"}).decode(t, &kept)
	assert.Equal(t, schema.ResultAck{Status: schema.StatusCancelled, Accepted: false}, kept)
	assert.Equal(t, schema.StatusCancelled, r.Get(id2).Status)
	a = r.post(id2, tok2, "result", schema.BuildResult{Cancelled: true, Error: "stopped again"})
	require.Equal(t, 409, a.code)

	// The grace passes: the token stops working for every route.
	_, err = r.DB.Pool.Exec(ctx, `UPDATE builds SET finished_at = now() - interval '6 minutes' WHERE id = ANY($1)`, []string{id, id2})
	require.NoError(t, err)
	for _, c := range []struct {
		id, tok, what string
		body          any
	}{{id, tok, "", nil}, {id, tok, "events", batch(1, text("late"))}, {id, tok, "result", res},
		{id, tok, "artifacts", upload("late.txt", []byte("late"))}, {id2, tok2, "", nil}} {
		a := r.post(c.id, c.tok, c.what, c.body)
		require.Equal(t, 401, a.code, "%s %s", c.what, a.body)
		assert.Contains(t, a.problem.Detail, "its runner token stopped working when it ended")
	}
	// A running build's token is untouched.
	id3, tok3 := r.running()
	_, err = r.DB.Pool.Exec(ctx, `UPDATE builds SET started_at = now() - interval '2 hours' WHERE id = $1`, id3)
	require.NoError(t, err)
	r.post(id3, tok3, "", nil).decode(t, &task)
	assert.Equal(t, schema.StatusRunning, task.Status)
}

// Per-build caps: past one, a post is refused (422 for a count, 413 for
// bytes) with the cap's problem type and nothing of it is stored; the build
// still ends with its result.
func TestPerBuildCaps(t *testing.T) {
	r := newRig(t, &runnerapi.Options{MaxEventsPerBuild: 5, MaxEventBytesPerBuild: 250, MaxArtifactsPerBuild: 2, MaxArtifactBytesPerBuild: 30})
	var ack schema.EventBatchAck
	capped := func(a answer, code int, detail string) {
		t.Helper()
		require.Equal(t, code, a.code, "%s", a.body)
		assert.Equal(t, schema.ProblemRunnerCap, a.problem.Type)
		assert.True(t, strings.HasPrefix(a.problem.Detail, detail), "%q, want %q", a.problem.Detail, detail)
	}

	// Event count.
	id, tok := r.running()
	r.post(id, tok, "events", batch(1, text("1"), text("2"), text("3"))).decode(t, &ack)
	capped(r.post(id, tok, "events", batch(2, text("4"), text("5"), text("6"))), 422,
		"events: the build has 3 events and may have at most 5 (the per-build cap); this batch adds 3")
	r.post(id, tok, "events", batch(2, text("4"), text("5"))).decode(t, &ack)
	assert.Equal(t, 2, ack.Stored, "up to the cap")
	capped(r.post(id, tok, "events", batch(3, text("6"))), 422, "events: the build has 5 events and may have at most 5")
	r.post(id, tok, "events", batch(1, text("1"), text("2"), text("3"))).decode(t, &ack)
	assert.True(t, ack.Duplicate, "a retried batch that was stored is still acknowledged")
	assert.Len(t, r.stored(id), 5)

	// Artifacts: count, then bytes; a path uploaded again replaces itself.
	for _, up := range []schema.ArtifactUpload{upload("a", bytes.Repeat([]byte("a"), 10)), upload("b", bytes.Repeat([]byte("b"), 10))} {
		require.Equal(t, 200, r.post(id, tok, "artifacts", up).code)
	}
	capped(r.post(id, tok, "artifacts", upload("c", []byte("c"))), 422, "artifacts: the build has 2 artifacts and may have at most 2 (the per-build cap)")
	require.Equal(t, 200, r.post(id, tok, "artifacts", upload("a", bytes.Repeat([]byte("A"), 15))).code, "a is replaced: 25 bytes in all")
	capped(r.post(id, tok, "artifacts", upload("b", bytes.Repeat([]byte("B"), 20))), 413,
		"content: the build's artifacts hold 15 bytes and may hold at most 30 (the per-build cap); this one adds 20")
	got, err := r.Client.Artifact(context.Background(), id, "b")
	require.NoError(t, err)
	assert.Equal(t, bytes.Repeat([]byte("b"), 10), got, "the refused upload left b as it was")

	var rack schema.ResultAck
	r.post(id, tok, "result", schema.BuildResult{Success: true}).decode(t, &rack)
	assert.Equal(t, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true}, rack, "the build still ends with its result")

	// Event bytes, on another build: each of these payloads is ~100 bytes.
	id2, tok2 := r.running()
	hundred := func() schema.EventInput { return text(strings.Repeat("x", 89)) }
	require.Len(t, hundred().Payload, 100)
	r.post(id2, tok2, "events", batch(1, hundred(), hundred())).decode(t, &ack)
	capped(r.post(id2, tok2, "events", batch(2, hundred())), 413,
		"events: the build's events hold 200 bytes and may hold at most 250 (the per-build cap); this batch adds 100")
	assert.Len(t, r.stored(id2), 2)
}

func TestNewRefusesNegativeLimits(t *testing.T) {
	t.Parallel()
	_, err := runnerapi.New(runnerapi.Options{MaxEventsPerBuild: -1})
	require.Error(t, err)
}
