package events_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

type env struct {
	t       *testing.T
	db      *pgtest.DB
	app     *app.App
	srv     *httptest.Server
	admin   string
	api     *client.Client // the API as admin
	project string
	env     *apptest.Env
}

type option func(*app.Options)

// setup starts a dispatcher (API only: its River client inserts) on its own schema.
func setup(t *testing.T, opts ...option) *env {
	t.Helper()
	t.Parallel()
	a := apptest.New(t, options(nil, opts...))
	e := &env{t: t, db: a.DB, app: a.App, srv: a.Server, admin: a.Admin, api: a.Client, env: a}
	e.project = a.Project("web", func(p *schema.Project) { p.CallbackSecret = "kcs_test" }).ID
	return e
}

// options are the dispatcher's options on pool (nil: the test's own).
func options(pool *pgxpool.Pool, opts ...option) app.Options {
	o := app.Options{Pool: pool, AuthCacheTTL: time.Minute, EventHeartbeat: 200 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// instance starts another dispatcher on pool (another replica when pool is
// another pool on the same schema).
func (e *env) instance(pool *pgxpool.Pool, opts ...option) (*app.App, *httptest.Server) {
	return apptest.Start(e.t, e.db, options(pool, opts...))
}

// build inserts a pending build (event 1 is its pending status).
func (e *env) build() string {
	e.t.Helper()
	return e.env.Pending(e.project, schema.BuildSpec{Prompt: "p"})
}

// appendEvents adds n log events numbered from the payload's "n".
func (e *env) appendEvents(id string, n int) {
	e.t.Helper()
	for i := range n {
		_, err := store.AppendEvent(context.Background(), e.db.Pool, id, schema.EventLog, map[string]any{"n": i})
		require.NoError(e.t, err)
	}
}

func (e *env) finish(id string, to schema.Status) {
	e.t.Helper()
	_, err := store.TransitionBuild(context.Background(), e.db.Pool, id, store.Transition{To: to, Reason: apptest.ReasonFor(to)})
	require.NoError(e.t, err)
}

// frame is one Server-Sent Event.
type frame struct {
	ID, Event, Data string
}

// sse opens an event stream; frames arrive on the channel, closed at the end.
func (e *env) sse(base, id, token string, hdr map[string]string, query string) (<-chan frame, func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/builds/"+id+"/events"+query, nil)
	require.NoError(e.t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	require.Equal(e.t, 200, res.StatusCode)
	require.Equal(e.t, "text/event-stream", res.Header.Get("Content-Type"))
	ch := make(chan frame, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer res.Body.Close()
		parseSSE(res, ch)
	}()
	return ch, func() { cancel(); <-done }
}

// wsDial opens the WebSocket of a build's events.
func (e *env) wsDial(base, id, token, query string) *websocket.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/builds/"+id+"/events/ws"+query,
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	require.NoError(e.t, err)
	c.SetReadLimit(1 << 20)
	e.t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// wsRead reads events until the server closes, returning them and the close error.
func wsRead(t *testing.T, c *websocket.Conn, max int) ([]schema.Event, error) {
	t.Helper()
	var out []schema.Event
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for max <= 0 || len(out) < max {
		_, b, err := c.Read(ctx)
		if err != nil {
			return out, err
		}
		var ev schema.Event
		require.NoError(t, json.Unmarshal(b, &ev))
		out = append(out, ev)
	}
	return out, nil
}

// collect reads SSE frames until "end" (returned) or until want events came.
func collect(t *testing.T, ch <-chan frame, want int) (evs []schema.Event, last frame) {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				return evs, frame{}
			}
			if f.Event == "end" || f.Event == "dropped" {
				return evs, f
			}
			var ev schema.Event
			require.NoError(t, json.Unmarshal([]byte(f.Data), &ev), f.Data)
			require.Equal(t, fmt.Sprint(ev.Seq), f.ID)
			require.Equal(t, string(ev.Type), f.Event)
			evs = append(evs, ev)
			if want > 0 && len(evs) == want {
				return evs, frame{}
			}
		case <-timeout:
			t.Fatalf("timed out after %d events", len(evs))
		}
	}
}

// requireSeqs checks evs are exactly from..to in order.
func requireSeqs(t *testing.T, evs []schema.Event, from, to int64) {
	t.Helper()
	got := make([]int64, len(evs))
	for i, e := range evs {
		got[i] = e.Seq
	}
	want := []int64{}
	for s := from; s <= to; s++ {
		want = append(want, s)
	}
	require.Equal(t, want, got)
}

// appendBatch stores n events in one statement, as a runner batch is stored.
func (e *env) appendBatch(id string, n int) {
	e.t.Helper()
	_, err := e.db.Pool.Exec(context.Background(), `WITH u AS (
			UPDATE builds SET event_seq = event_seq + $2 WHERE id = $1 RETURNING event_seq - $2 AS base)
		INSERT INTO build_events (build_id, seq, type, payload)
		SELECT $1, u.base + g, 'agent_text', jsonb_build_object('text', repeat('x', 1000))
		FROM u, generate_series(1, $2::int) AS g`, id, n)
	require.NoError(e.t, err)
}

// parseSSE turns a response body into frames on ch, closing it at the end.
func parseSSE(res *http.Response, ch chan<- frame) {
	defer close(ch)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var f frame
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if f.Event != "" || f.Data != "" {
				ch <- f
			}
			f = frame{}
		case strings.HasPrefix(line, "id: "):
			f.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			f.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			f.Data = line[6:]
		}
	}
}
