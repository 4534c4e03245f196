package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recorded struct {
	method, path, auth string
	body               []byte
}

// setup starts a dispatcher whose answers come from handle, in order of the calls.
func setup(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) (*Client, func() []recorded) {
	t.Helper()
	var (
		mu    sync.Mutex
		calls []recorded
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, recorded{r.Method, r.URL.Path, r.Header.Get("Authorization"), b})
		n := len(calls)
		mu.Unlock()
		handle(n, w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Options{
		BaseURL: srv.URL + "/base", BuildID: "b-1", Token: "tok-secret",
		Backoff:    Backoff{Initial: 5 * time.Millisecond, Max: 40 * time.Millisecond},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		HTTPClient: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	})
	require.NoError(t, err)
	return c, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), calls...)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func TestTaskSendsTokenAndDecodes(t *testing.T) {
	t.Parallel()
	c, calls := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, schema.RunnerTask{BuildID: "b-1", Status: schema.StatusRunning, Spec: schema.BuildSpec{Prompt: "p"}})
	})
	task, err := c.Task(context.Background())
	require.NoError(t, err)
	require.Equal(t, "b-1", task.BuildID)
	require.Equal(t, "p", task.Spec.Prompt)
	got := calls()
	require.Len(t, got, 1)
	require.Equal(t, "GET", got[0].method)
	require.Equal(t, "/base/runner/v1/builds/b-1", got[0].path)
	require.Equal(t, "Bearer tok-secret", got[0].auth)
}

func TestRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	c, calls := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		case 3:
			// A dropped connection: a network error.
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
		default:
			writeJSON(w, 200, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true})
		}
	})
	res := schema.BuildResult{Success: true, Output: "done", FilesChanged: []string{"a"}}
	ack, err := c.PostResult(context.Background(), res)
	require.NoError(t, err)
	require.True(t, ack.Accepted)
	got := calls()
	require.Len(t, got, 4)
	for _, call := range got {
		// Every retry carries the same body: the post is idempotent.
		require.JSONEq(t, string(got[0].body), string(call.body))
		require.Equal(t, "/base/runner/v1/builds/b-1/result", call.path)
	}
}

func TestNoRetryOn4xx(t *testing.T) {
	t.Parallel()
	c, calls := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, `{"title":"Unprocessable","detail":"events[0].type: unknown"}`)
	})
	_, err := c.PostEvents(context.Background(), schema.EventBatch{Batch: 1})
	require.ErrorIs(t, err, ErrRejected)
	require.NotErrorIs(t, err, ErrBuildTerminal)
	var he *HTTPError
	require.ErrorAs(t, err, &he)
	require.Equal(t, 422, he.StatusCode)
	require.Contains(t, err.Error(), "events[0].type: unknown")
	require.NotContains(t, err.Error(), "tok-secret")
	require.Len(t, calls(), 1)

	c, calls = setup(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	_, err = c.Task(context.Background())
	require.ErrorIs(t, err, ErrRejected)
	require.Len(t, calls(), 1)
}

func TestConflictMeansTerminal(t *testing.T) {
	t.Parallel()
	c, calls := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusConflict, map[string]any{"status": "cancelled", "detail": "build is cancelled"})
	})
	ack, err := c.PostResult(context.Background(), schema.BuildResult{})
	require.NoError(t, err, "a 409 on the result is 'already terminal', not an error")
	require.False(t, ack.Accepted)
	require.Equal(t, schema.StatusCancelled, ack.Status)

	_, err = c.PostEvents(context.Background(), schema.EventBatch{Batch: 3})
	require.ErrorIs(t, err, ErrBuildTerminal)
	require.Len(t, calls(), 2, "no retries")
}

// The dispatcher's own 409 problem (its status is the HTTP status, a
// number): final for every call, never retried.
func TestConflictProblemIsFinal(t *testing.T) {
	t.Parallel()
	c, calls := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"type":"about:blank","title":"Conflict","status":409,"detail":"build is completed; events are not accepted after the build ended"}`)
	})
	ack, err := c.PostResult(context.Background(), schema.BuildResult{Success: true})
	require.NoError(t, err)
	require.False(t, ack.Accepted)
	_, err = c.PostEvents(context.Background(), schema.EventBatch{Batch: 1})
	require.ErrorIs(t, err, ErrBuildTerminal)
	require.ErrorContains(t, err, "build is completed")
	_, err = c.PutArtifact(context.Background(), schema.ArtifactUpload{Path: "a"})
	require.ErrorIs(t, err, ErrBuildTerminal)
	require.NotErrorIs(t, err, ErrRejected)
	require.Len(t, calls(), 3, "no retries")
}

// A retry of an accepted result is acknowledged as a duplicate.
func TestResultDuplicate(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true, Duplicate: true})
	})
	ack, err := c.PostResult(context.Background(), schema.BuildResult{Success: true})
	require.NoError(t, err)
	require.Equal(t, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true, Duplicate: true}, ack)
}

// A per-build cap is known by its problem type, not its text: final, not retried.
func TestCapReached(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code int
		typ  string
		cap  bool
	}{
		{422, schema.ProblemRunnerCap, true},
		{413, schema.ProblemRunnerCap, true},
		{422, "https://kiln.dev/problems/validation-failed", false},
		{413, "about:blank", false},
	} {
		cl, calls := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(c.code)
			_ = json.NewEncoder(w).Encode(map[string]any{"type": c.typ, "title": "x", "status": c.code, "detail": "events: the cap"})
		})
		_, err := cl.PostEvents(context.Background(), schema.EventBatch{Batch: 1})
		require.ErrorIs(t, err, ErrRejected)
		require.Equal(t, c.cap, errors.Is(err, ErrCapReached), "%d %s", c.code, c.typ)
		var he *HTTPError
		require.ErrorAs(t, err, &he)
		require.Equal(t, c.typ, he.Type)
		_, err = cl.PutArtifact(context.Background(), schema.ArtifactUpload{Path: "a"})
		require.Equal(t, c.cap, errors.Is(err, ErrCapReached))
		require.Len(t, calls(), 2, "no retries")
	}
}

func TestGivesUpWhenContextEnds(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	c, _ := setup(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.PostResult(ctx, schema.BuildResult{})
	require.Error(t, err)
	require.Less(t, time.Since(start), 2*time.Second)
	require.Greater(t, n.Load(), int64(2), "retried before giving up")
	var he *HTTPError
	require.True(t, errors.As(err, &he) && he.StatusCode == 502, "the last answer is in the error: %v", err)
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := New(Options{BaseURL: url, BuildID: "b", Token: "t", Backoff: Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = c.PostResult(ctx, schema.BuildResult{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "giving up")
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		require.Equal(t, w*time.Millisecond, b.Bound(i), "attempt %d", i)
		for range 50 {
			d := b.Delay(i)
			require.GreaterOrEqual(t, d, b.Bound(i)/2)
			require.LessOrEqual(t, d, b.Bound(i))
		}
	}
	// Jitter: delays of one attempt are not all equal.
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[b.Delay(3)] = true
	}
	require.Greater(t, len(seen), 1)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := New(Options{BaseURL: "dispatcher:8080"})
	require.ErrorContains(t, err, "base URL: must be an absolute http or https URL")
	require.ErrorContains(t, err, "build id: required")
	require.ErrorContains(t, err, "token: required")
}
