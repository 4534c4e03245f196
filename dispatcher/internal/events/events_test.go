package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestSSEReplayLiveAndResume(t *testing.T) {
	e := setup(t)
	id := e.build()
	e.appendEvents(id, 4) // seqs 1 (pending) .. 5

	ch, stop := e.sse(e.srv.URL, id, e.admin, nil, "")
	evs, _ := collect(t, ch, 5)
	requireSeqs(t, evs, 1, 5)
	assert.Equal(t, schema.EventStatus, evs[0].Type)
	assert.JSONEq(t, `{"n":3}`, string(evs[4].Payload))

	e.appendEvents(id, 3) // live: 6..8
	evs, _ = collect(t, ch, 3)
	requireSeqs(t, evs, 6, 8)
	stop()

	// A reconnecting EventSource sends Last-Event-ID; it wins over ?after=.
	ch, stop = e.sse(e.srv.URL, id, e.admin, map[string]string{"Last-Event-ID": "6"}, "?after=2")
	evs, _ = collect(t, ch, 2)
	requireSeqs(t, evs, 7, 8)
	e.finish(id, schema.StatusCompleted) // seq 9
	evs, end := collect(t, ch, 0)
	requireSeqs(t, evs, 9, 9)
	assert.Equal(t, "end", end.Event)
	assert.JSONEq(t, `{"status":"completed","last_seq":9}`, end.Data)
	_, open := <-ch
	assert.False(t, open, "the stream ends once the build is terminal")
	stop()

	// A terminal build replays from ?after= and ends at once.
	ch, stop = e.sse(e.srv.URL, id, e.admin, nil, "?after=3")
	evs, end = collect(t, ch, 0)
	requireSeqs(t, evs, 4, 9)
	assert.Equal(t, "end", end.Event)
	stop()
	ch, stop = e.sse(e.srv.URL, id, e.admin, nil, "?after=9")
	evs, end = collect(t, ch, 0)
	assert.Empty(t, evs)
	assert.Equal(t, "end", end.Event)
	stop()
}

func TestSSEHeartbeat(t *testing.T) {
	e := setup(t)
	id := e.build()
	req, err := http.NewRequest("GET", e.srv.URL+"/builds/"+id+"/events?after=1", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	buf := make([]byte, 4096)
	var got strings.Builder
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(got.String(), ": heartbeat") && time.Now().Before(deadline) {
		n, err := res.Body.Read(buf)
		require.NoError(t, err)
		got.Write(buf[:n])
	}
	assert.Contains(t, got.String(), ": heartbeat\n\n")
}

func TestWebSocketReplayLiveAndResume(t *testing.T) {
	e := setup(t)
	id := e.build()
	e.appendEvents(id, 4)

	c := e.wsDial(e.srv.URL, id, e.admin, "?after=2")
	evs, err := wsRead(t, c, 3)
	require.NoError(t, err)
	requireSeqs(t, evs, 3, 5)
	e.appendEvents(id, 2)
	evs, err = wsRead(t, c, 2)
	require.NoError(t, err)
	requireSeqs(t, evs, 6, 7)
	require.NoError(t, c.Close(websocket.StatusNormalClosure, ""))

	c = e.wsDial(e.srv.URL, id, e.admin, "?after=6")
	evs, err = wsRead(t, c, 1)
	require.NoError(t, err)
	requireSeqs(t, evs, 7, 7)
	e.finish(id, schema.StatusFailed)
	evs, err = wsRead(t, c, 0)
	requireSeqs(t, evs, 8, 8)
	assert.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err), "%v", err)

	// Terminal: replay then a normal close.
	c = e.wsDial(e.srv.URL, id, e.admin, "")
	evs, err = wsRead(t, c, 0)
	requireSeqs(t, evs, 1, 8)
	assert.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err))
}

func TestScopingAndValidation(t *testing.T) {
	e := setup(t)
	id := e.build()
	op := &schema.Project{ID: uuid.NewString(), Name: "api", Namespace: "default", Workdir: "/w", GitRemote: "origin",
		GitBranch: "main", AuthorName: "Kiln", AuthorEmail: "k@localhost", MaxConcurrent: 1, CallbackSecret: "kcs_x"}
	require.NoError(t, store.CreateProject(context.Background(), e.db.Pool, op))
	other, err := auth.Issue(context.Background(), e.db.Pool, "other", false, []string{op.ID})
	require.NoError(t, err)
	mine, err := auth.Issue(context.Background(), e.db.Pool, "mine", false, []string{e.project})
	require.NoError(t, err)

	get := func(path, token string, hdr ...string) *http.Response {
		req, err := http.NewRequest("GET", e.srv.URL+path, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	for _, path := range []string{"/builds/" + id + "/events", "/builds/" + id + "/events/ws"} {
		assert.Equal(t, 401, get(path, "").StatusCode, path)
		res := get(path, other, "Accept", "text/event-stream")
		assert.Equal(t, 404, res.StatusCode, "another project's build is absent: %s", path)
		assert.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
		assert.Equal(t, 422, get(path+"?after=-1", mine).StatusCode, path)
	}
	assert.Equal(t, 422, get("/builds/"+id+"/events", mine, "Accept", "text/event-stream", "Last-Event-ID", "x").StatusCode)

	res := get("/builds/"+id+"/events?after=0", mine)
	require.Equal(t, 200, res.StatusCode)
	var list struct{ Events []schema.Event }
	require.NoError(t, json.NewDecoder(res.Body).Decode(&list))
	requireSeqs(t, list.Events, 1, 1)

	_, _, err = websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/builds/"+id+"/events/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + other}}})
	require.Error(t, err)
}

// 100 watchers of one build, over SSE and WebSocket, each get every event in
// order while the events are being written.
func TestHundredWatchers(t *testing.T) {
	e := setup(t)
	id := e.build()
	const watchers, extra = 100, 300
	var wg sync.WaitGroup
	results := make([][]schema.Event, watchers)
	errs := make([]error, watchers)
	for i := range watchers {
		if i%2 == 0 {
			ch, stop := e.sse(e.srv.URL, id, e.admin, nil, "")
			wg.Go(func() {
				defer stop()
				evs, end := collect(t, ch, 0)
				results[i] = evs
				if end.Event != "end" {
					errs[i] = fmt.Errorf("watcher %d: no end event", i)
				}
			})
		} else {
			c := e.wsDial(e.srv.URL, id, e.admin, "")
			wg.Go(func() {
				evs, err := wsRead(t, c, 0)
				results[i] = evs
				if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
					errs[i] = fmt.Errorf("watcher %d: %v", i, err)
				}
			})
		}
	}
	go func() {
		e.appendEvents(id, extra)
	}()
	require.Eventually(t, func() bool {
		var seq int64
		_ = e.db.Pool.QueryRow(context.Background(), "SELECT event_seq FROM builds WHERE id = $1", id).Scan(&seq)
		return seq == extra+1
	}, 90*time.Second, 10*time.Millisecond)
	e.finish(id, schema.StatusCompleted)
	wg.Wait()
	for i := range watchers {
		require.NoError(t, errs[i])
		requireSeqs(t, results[i], 1, extra+2)
	}
}

// Events written through one dispatcher reach watchers of another on the
// same database: LISTEN/NOTIFY fan-out across replicas.
func TestFanOutAcrossInstances(t *testing.T) {
	e := setup(t)
	other := pgtest.Pool(t, e.db.Schema, 0)
	_, srvB := e.instance(other)
	id := e.build()

	ch, stop := e.sse(srvB.URL, id, e.admin, nil, "")
	defer stop()
	c := e.wsDial(srvB.URL, id, e.admin, "")
	evs, _ := collect(t, ch, 1)
	requireSeqs(t, evs, 1, 1)

	// Written on instance A (its pool and its lifecycle).
	for i := range 20 {
		_, err := store.AppendEvent(context.Background(), e.app.Pool, id, schema.EventLog, map[string]int{"n": i})
		require.NoError(t, err)
		if i == 10 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// And through instance A's runner protocol, a batch posted twice is stored once.
	tok := "kiln_runner_test_token"
	require.NoError(t, store.SetRunnerTokenHash(context.Background(), e.db.Pool, id, auth.Hash(tok)))
	batch := `{"batch":1,"events":[{"type":"agent_text","time":"2026-01-01T00:00:00Z","payload":{"text":"a"}},` +
		`{"type":"tool_call","time":"2026-01-01T00:00:01Z","payload":{"name":"Edit"}}]}`
	for range 2 {
		req, err := http.NewRequest("POST", e.srv.URL+schema.RunnerAPIPrefix+id+"/events", strings.NewReader(batch))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, 200, res.StatusCode)
	}
	_, err := e.app.Lifecycle.Finish(context.Background(), id, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)

	evs, end := collect(t, ch, 0)
	requireSeqs(t, evs, 2, 24)
	assert.Equal(t, schema.EventToolCall, evs[len(evs)-2].Type)
	assert.Equal(t, "end", end.Event)
	wevs, err := wsRead(t, c, 0)
	requireSeqs(t, wevs, 1, 24)
	assert.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err))
}

// A WebSocket client that stops reading is dropped with a close reason that
// says where to resume, and resuming there gets the rest.
func TestSlowConsumerWebSocket(t *testing.T) {
	e := setup(t, func(o *app.Options) { o.EventBuffer = 4 })
	id := e.build()
	c := e.wsDial(e.srv.URL, id, e.admin, "")
	evs, err := wsRead(t, c, 1)
	require.NoError(t, err)

	e.appendBatch(id, 400) // one notification, read at once: far more than the buffer of 4
	more, err := wsRead(t, c, 0)
	evs = append(evs, more...)
	require.Equal(t, websocket.StatusCode(schema.CloseSlowConsumer), websocket.CloseStatus(err), "%v", err)
	last := evs[len(evs)-1].Seq
	requireSeqs(t, evs, 1, last)
	require.Less(t, last, int64(401))
	var ce websocket.CloseError
	require.True(t, errors.As(err, &ce))
	assert.Equal(t, fmt.Sprintf("slow consumer; resume from seq %d", last), ce.Reason)

	e.finish(id, schema.StatusCancelled)
	c = e.wsDial(e.srv.URL, id, e.admin, fmt.Sprintf("?after=%d", last))
	rest, err := wsRead(t, c, 0)
	assert.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err))
	requireSeqs(t, rest, last+1, 402)
}

// The same over SSE: "event: dropped" with where to resume.
func TestSlowConsumerSSE(t *testing.T) {
	e := setup(t, func(o *app.Options) { o.EventBuffer = 4 })
	id := e.build()
	req, err := http.NewRequest("GET", e.srv.URL+"/builds/"+id+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	ch := make(chan frame, 1024)
	go parseSSE(res, ch)
	first, _ := collect(t, ch, 1) // subscribed: the replay came

	e.appendBatch(id, 400)
	evs, last := collect(t, ch, 0)
	evs = append(first, evs...)
	require.Equal(t, "dropped", last.Event)
	var d struct {
		Reason      string `json:"reason"`
		ResumeAfter int64  `json:"resume_after"`
	}
	require.NoError(t, json.Unmarshal([]byte(last.Data), &d))
	assert.Equal(t, "slow consumer", d.Reason)
	requireSeqs(t, evs, 1, d.ResumeAfter)

	e.finish(id, schema.StatusCompleted)
	ch2, stop := e.sse(e.srv.URL, id, e.admin, map[string]string{"Last-Event-ID": fmt.Sprint(d.ResumeAfter)}, "")
	defer stop()
	rest, end := collect(t, ch2, 0)
	assert.Equal(t, "end", end.Event)
	requireSeqs(t, rest, d.ResumeAfter+1, 402)
}

// After the listener's connection is killed it reconnects and re-reads, so
// watchers miss nothing.
func TestListenerReconnects(t *testing.T) {
	e := setup(t)
	id := e.build()
	listeners := func() (n int) {
		require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT count(*)::int FROM pg_stat_activity
			WHERE application_name = $1`, "kiln-events "+e.db.Schema).Scan(&n))
		return n
	}
	assert.Zero(t, listeners(), "no LISTEN connection before anyone watches")
	ch, stop := e.sse(e.srv.URL, id, e.admin, nil, "")
	defer stop()
	evs, _ := collect(t, ch, 1)
	requireSeqs(t, evs, 1, 1)

	require.Eventually(t, func() bool { return listeners() == 1 }, 10*time.Second, 10*time.Millisecond,
		"one LISTEN connection, opened by the first subscriber")
	var killed int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid))::int
		FROM pg_stat_activity WHERE application_name = $1`, "kiln-events "+e.db.Schema).Scan(&killed))
	require.Equal(t, 1, killed)
	e.appendEvents(id, 3)
	evs, _ = collect(t, ch, 3)
	requireSeqs(t, evs, 2, 4)
	assert.Eventually(t, func() bool { return listeners() == 1 }, 10*time.Second, 10*time.Millisecond, "reconnected")
}

// Watchers that join while a build is busy, with a small buffer, still see
// every event exactly once and in order: catch-up overflow replays again, and
// a dropped client resumes where it was (as `dispatcher client watch` does).
func TestWatchersJoiningMidStream(t *testing.T) {
	e := setup(t, func(o *app.Options) { o.EventBuffer = 8 })
	id := e.build()
	const watchers, batches = 20, 60
	var wg sync.WaitGroup
	results := make([][]int64, watchers)
	started := make(chan struct{}, watchers)
	for i := range watchers {
		wg.Go(func() {
			if i > 0 {
				time.Sleep(time.Duration(i) * 15 * time.Millisecond)
			}
			c := e.api
			started <- struct{}{}
			st, err := c.Watch(context.Background(), id, client.WatchOptions{WebSocket: i%2 == 1, Sleep: func(time.Duration) {},
				Show: func(ev schema.Event) { results[i] = append(results[i], ev.Seq) }})
			assert.NoError(t, err)
			assert.Equal(t, schema.StatusCompleted, st)
		})
	}
	<-started
	total := int64(1)
	for b := range batches {
		n := 1 + b%25
		e.appendBatch(id, n)
		total += int64(n)
		time.Sleep(5 * time.Millisecond)
	}
	e.finish(id, schema.StatusCompleted)
	total++
	wg.Wait()
	for i, got := range results {
		want := make([]int64, total)
		for j := range want {
			want[j] = int64(j + 1)
		}
		require.Equal(t, want, got, "watcher %d", i)
	}
}
