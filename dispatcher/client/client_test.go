package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

type env struct {
	*apptest.Env
	project string // web's id
	token   string // a token for web
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	a := apptest.New(t, app.Options{EventHeartbeat: 100 * time.Millisecond})
	p := a.Project("web", func(p *schema.Project) { p.CallbackSecret = "kcs_x" })
	return &env{Env: a, project: p.ID, token: a.Token("bot", p.ID)}
}

func (e *env) transition(id string, to schema.Status) {
	e.T.Helper()
	_, err := store.TransitionBuild(context.Background(), e.DB.Pool, id, store.Transition{To: to, Reason: apptest.ReasonFor(to), Error: "why"})
	require.NoError(e.T, err)
}

// Watch shows every event once, in order, across reconnects, over SSE and
// the WebSocket, and returns the status the build ended in.
func TestWatchResumes(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct {
		ws bool
		to schema.Status
	}{{false, schema.StatusCompleted}, {true, schema.StatusFailed}, {false, schema.StatusFailed}, {true, schema.StatusCompleted}} {
		t.Run(fmt.Sprintf("ws=%v/%s", tc.ws, tc.to), func(t *testing.T) {
			id := e.Pending(e.project, schema.BuildSpec{Prompt: "p"})
			ctx := context.Background()

			var mu sync.Mutex
			var seqs []int64
			c := e.ClientAs(e.token)
			done := make(chan schema.Status, 1)
			go func() {
				st, err := c.Watch(ctx, id, client.WatchOptions{WebSocket: tc.ws, Sleep: func(time.Duration) {},
					Show: func(ev schema.Event) { mu.Lock(); seqs = append(seqs, ev.Seq); mu.Unlock() }})
				assert.NoError(t, err)
				done <- st
			}()
			seen := func(n int) func() bool {
				return func() bool { mu.Lock(); defer mu.Unlock(); return len(seqs) >= n }
			}
			require.Eventually(t, seen(1), 10*time.Second, 5*time.Millisecond)
			for i := range 30 {
				_, err := store.AppendEvent(ctx, e.DB.Pool, id, schema.EventAgentText, schema.AgentTextPayload{Text: fmt.Sprint(i)})
				require.NoError(t, err)
				if i%10 == 5 {
					require.Eventually(t, seen(i+2), 10*time.Second, 5*time.Millisecond)
					e.Server.CloseClientConnections() // the watcher reconnects and resumes
				}
			}
			_, err := store.TransitionBuild(ctx, e.DB.Pool, id, store.Transition{To: tc.to, Reason: apptest.ReasonFor(tc.to)})
			require.NoError(t, err)
			select {
			case st := <-done:
				assert.Equal(t, tc.to, st)
			case <-time.After(20 * time.Second):
				t.Fatal("watch did not end")
			}
			want := make([]int64, 32)
			for i := range want {
				want[i] = int64(i + 1)
			}
			assert.Equal(t, want, seqs, "every event once, in order, across reconnects")
		})
	}
}

// Submit survives a lost answer and an outage between it and the API: the
// first attempt reaches the dispatcher but its answer is cut off, the second
// meets a 503, the third gets through. Every attempt carries the same
// Idempotency-Key, so the answer names the build the first attempt made,
// and only that build exists. A 422 is not retried.
func TestSubmitRetriesWithOneKey(t *testing.T) {
	e := setup(t)
	var mu sync.Mutex
	var keys []string
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		switch n {
		case 1: // delivered, but the answer is lost
			e.Server.Config.Handler.ServeHTTP(httptest.NewRecorder(), r)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			e.Server.Config.Handler.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(front.Close)
	c := &client.Client{BaseURL: front.URL, Token: e.token}
	acc, err := c.Submit(context.Background(), "web", schema.BuildSpec{Prompt: "once"}, "")
	require.NoError(t, err)
	require.Len(t, keys, 3)
	assert.NotEmpty(t, keys[0], "a key is made when none is given")
	assert.Equal(t, []string{keys[0], keys[0], keys[0]}, keys, "one key for every attempt")
	var builds int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM builds`).Scan(&builds))
	assert.Equal(t, 1, builds, "one build for three attempts")
	var first string
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT id FROM builds`).Scan(&first))
	assert.Equal(t, first, acc.TaskID)

	// A refusal is final: one attempt.
	var tries int
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tries++
		mu.Unlock()
		e.Server.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(counting.Close)
	c = &client.Client{BaseURL: counting.URL, Token: e.token}
	_, err = c.Submit(context.Background(), "web", schema.BuildSpec{Prompt: ""}, "")
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusUnprocessableEntity, apiErr.Status)
	assert.Equal(t, 1, tries)
}

// A watch that starts after a build's last event still learns how the
// build ended: over SSE from the end event, over the WebSocket (whose close
// reason the client does not read) from the build.
func TestWatchAfterTheEnd(t *testing.T) {
	e := setup(t)
	id := e.Pending(e.project, schema.BuildSpec{Prompt: "p"})
	e.transition(id, schema.StatusCancelled)
	for _, ws := range []bool{false, true} {
		var shown []int64
		st, err := e.ClientAs(e.token).Watch(context.Background(), id, client.WatchOptions{After: 2, WebSocket: ws,
			Show: func(ev schema.Event) { shown = append(shown, ev.Seq) }})
		require.NoError(t, err, "ws=%v", ws)
		assert.Equal(t, schema.StatusCancelled, st, "ws=%v", ws)
		assert.Empty(t, shown, "ws=%v", ws)
	}
}

// Wait returns once the build is in a wanted status, at once when it is
// already there, with ErrEnded when it ended otherwise, and when ctx ends.
func TestWait(t *testing.T) {
	e := setup(t)
	c := e.ClientAs(e.token)
	ctx := context.Background()
	id := e.Pending(e.project, schema.BuildSpec{Prompt: "p"})

	b, err := c.Wait(ctx, id, schema.StatusPending)
	require.NoError(t, err)
	assert.Equal(t, schema.StatusPending, b.Status, "already there")

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Wait(short, id, schema.StatusRunning)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	type waited struct {
		b   *schema.Build
		err error
	}
	running, ended := make(chan waited, 1), make(chan waited, 1)
	go func() { b, err := c.Wait(ctx, id, schema.StatusRunning); running <- waited{b, err} }()
	go func() { b, err := c.Wait(ctx, id); ended <- waited{b, err} }()
	time.Sleep(200 * time.Millisecond) // both follow the stream by now, most likely; either way they must see it
	e.transition(id, schema.StatusRunning)
	got := <-running
	require.NoError(t, got.err)
	assert.Equal(t, schema.StatusRunning, got.b.Status)
	e.transition(id, schema.StatusFailed)
	got = <-ended
	require.NoError(t, got.err)
	assert.Equal(t, schema.StatusFailed, got.b.Status)
	assert.Equal(t, "why", got.b.Error)

	b, err = c.Wait(ctx, id, schema.StatusCompleted)
	require.ErrorIs(t, err, client.ErrEnded)
	assert.Equal(t, schema.StatusFailed, b.Status)
	assert.Equal(t, schema.StatusFailed, e.Wait(id).Status)

	// The status events tell the same story, typed.
	evs, st := e.Stream(id, client.WatchOptions{WebSocket: true})
	assert.Equal(t, schema.StatusFailed, st)
	var story []schema.StatusPayload
	for _, ev := range evs {
		p, ok := schema.PayloadAs[schema.StatusPayload](ev)
		require.True(t, ok, "%s", ev.Payload)
		story = append(story, p)
	}
	assert.Equal(t, []schema.StatusPayload{{Status: schema.StatusPending}, {Status: schema.StatusRunning, Error: "why"},
		{Status: schema.StatusFailed, Error: "why", Reason: schema.ReasonRunnerError}}, story)

	_, err = c.Wait(ctx, "01900000-0000-7000-8000-000000000000")
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusNotFound, apiErr.Status)
}

// The rest of the API a test or a bot needs: projects, submissions without
// a key, a page of events, readiness.
func TestProjectsEventsReady(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	require.NoError(t, e.Client.Ready(ctx))

	p, err := e.Client.CreateProject(ctx, schema.ProjectInput{Name: "api", MaxConcurrent: 2})
	require.NoError(t, err)
	assert.Equal(t, "api", p.Name)
	assert.Equal(t, 2, p.MaxConcurrent)
	assert.NotEmpty(t, p.CallbackSecret, "shown once, when made")
	_, err = e.ClientAs(e.token).CreateProject(ctx, schema.ProjectInput{Name: "nope"})
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusForbidden, apiErr.Status)

	spec := schema.BuildSpec{Prompt: "twice"}
	a, err := e.Client.SubmitOnce(ctx, p.ID, spec, "")
	require.NoError(t, err)
	b, err := e.Client.SubmitOnce(ctx, "api", spec, "")
	require.NoError(t, err)
	assert.NotEqual(t, a.TaskID, b.TaskID, "without a key, two submissions are two builds")

	for i := range 3 {
		_, err := store.AppendEvent(ctx, e.DB.Pool, a.TaskID, schema.EventInfo, schema.InfoPayload{Message: fmt.Sprint(i)})
		require.NoError(t, err)
	}
	evs, err := e.Client.Events(ctx, a.TaskID, 2)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	assert.Equal(t, int64(3), evs[0].Seq)
	p1, err := evs[1].Decode()
	require.NoError(t, err)
	assert.Equal(t, schema.InfoPayload{Message: "2"}, p1)

	_, err = e.Client.Artifact(ctx, a.TaskID, "dist/index.html")
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusNotFound, apiErr.Status)

	down := &client.Client{BaseURL: "http://127.0.0.1:1"}
	require.Error(t, down.Ready(ctx))
}

// Followup posts a BuildSpec (with its fallback) to the earlier build's
// followups; an outage in front of the API (a 503) is retried under the
// same Idempotency-Key, as Submit does, and one follow-up is made.
func TestFollowupRetriesWithOneKey(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	parent := e.Pending(e.project, schema.BuildSpec{Prompt: "add a pricing page"})
	_, err := store.TransitionBuild(ctx, e.DB.Pool, parent, store.Transition{To: schema.StatusCompleted,
		Result: &schema.BuildResult{Success: true, SessionID: "s-1"}})
	require.NoError(t, err)
	var mu sync.Mutex
	var paths, keys []string
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		e.Server.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	c := &client.Client{BaseURL: front.URL, Token: e.token}
	budget, turns := 1.5, 7
	spec := schema.BuildSpec{Prompt: "now link it", Fallback: schema.FallbackFresh, MaxBudgetUSD: &budget, MaxTurns: &turns}
	acc, err := c.Followup(ctx, parent, spec, "")
	require.NoError(t, err)
	assert.Equal(t, schema.StatusPending, acc.Status)
	want := "POST /builds/" + parent + "/followups"
	assert.Equal(t, []string{want, want}, paths)
	assert.NotEmpty(t, keys[0])
	assert.Equal(t, keys[0], keys[1], "one key for every attempt")
	child, err := c.Get(ctx, acc.TaskID)
	require.NoError(t, err)
	assert.Equal(t, parent, child.ParentID)
	assert.Equal(t, spec.Prompt, child.Spec.Prompt)
	assert.Equal(t, schema.FallbackFresh, child.Spec.Fallback)
	assert.Equal(t, &budget, child.Spec.MaxBudgetUSD)
	assert.Equal(t, &turns, child.Spec.MaxTurns)
	p, err := c.Get(ctx, parent)
	require.NoError(t, err)
	assert.Equal(t, []string{acc.TaskID}, p.Followups, "one follow-up for two attempts")
}
