package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/jobrunner/internal/client"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// poster records posts; fail decides an attempt's fate before it is stored.
type poster struct {
	mu     sync.Mutex
	posts  []schema.EventBatch
	stored []schema.EventBatch
	status schema.Status
	fail   func(n int, b schema.EventBatch) error
}

func (p *poster) PostEvents(ctx context.Context, b schema.EventBatch) (schema.EventBatchAck, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.posts = append(p.posts, b)
	if p.fail != nil {
		if err := p.fail(len(p.posts), b); err != nil {
			return schema.EventBatchAck{}, err
		}
	}
	if int(b.Batch) <= len(p.stored) {
		return schema.EventBatchAck{Duplicate: true, Status: p.status}, nil
	}
	if int(b.Batch) != len(p.stored)+1 {
		return schema.EventBatchAck{}, fmt.Errorf("gap: got %d after %d", b.Batch, len(p.stored))
	}
	p.stored = append(p.stored, b)
	return schema.EventBatchAck{Stored: len(b.Events), Status: p.status}, nil
}

func ev(i int) schema.EventInput {
	b, _ := json.Marshal(map[string]int{"i": i})
	return schema.EventInput{Type: schema.EventLog, Payload: b}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestOrderedBatches(t *testing.T) {
	t.Parallel()
	p := &poster{status: schema.StatusRunning}
	b := Start(context.Background(), p, Options{MaxEvents: 7, Interval: 5 * time.Millisecond, Logger: quiet()})
	for i := range 100 {
		b.Add(ev(i))
		if i%13 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	require.NoError(t, b.Close(context.Background()))
	var got []int
	for i, bt := range p.stored {
		require.EqualValues(t, i+1, bt.Batch)
		require.LessOrEqual(t, len(bt.Events), 7)
		for _, e := range bt.Events {
			var v map[string]int
			require.NoError(t, json.Unmarshal(e.Payload, &v))
			got = append(got, v["i"])
			require.False(t, e.Time.IsZero())
		}
	}
	require.Len(t, got, 100)
	for i, v := range got {
		require.Equal(t, i, v)
	}
	n, dropped := b.Stats()
	require.EqualValues(t, len(p.stored), n)
	require.Zero(t, dropped)
}

// A batch whose ack was lost is retried as it was (same number, same
// events) by the real client, and the dispatcher stores it once.
func TestLostAckRetriedAsItWas(t *testing.T) {
	t.Parallel()
	p := &poster{}
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var bt schema.EventBatch
		require.NoError(t, json.NewDecoder(r.Body).Decode(&bt))
		ack, err := p.PostEvents(r.Context(), bt)
		require.NoError(t, err)
		mu.Lock()
		calls++
		lose := calls == 1
		mu.Unlock()
		if lose {
			// Stored, but the answer never arrives.
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		_ = json.NewEncoder(w).Encode(ack)
	}))
	defer srv.Close()
	c, err := client.New(client.Options{BaseURL: srv.URL, BuildID: "b", Token: "t", Logger: quiet(),
		Backoff:    client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	require.NoError(t, err)
	b := Start(context.Background(), c, Options{MaxEvents: 3, Interval: time.Millisecond, Logger: quiet()})
	for i := range 9 {
		b.Add(ev(i))
	}
	require.NoError(t, b.Close(context.Background()))
	require.Len(t, p.stored, 3)
	require.Equal(t, p.posts[0], p.posts[1], "the retry carries the same batch")
	for i, bt := range p.stored {
		require.EqualValues(t, i+1, bt.Batch)
	}
}

func TestTerminalAck(t *testing.T) {
	t.Parallel()
	p := &poster{status: schema.StatusCancelled}
	b := Start(context.Background(), p, Options{Interval: time.Millisecond, Logger: quiet()})
	b.Add(ev(1))
	select {
	case <-b.Terminal():
	case <-time.After(5 * time.Second):
		t.Fatal("terminal ack not surfaced")
	}
	require.Equal(t, schema.StatusCancelled, b.Status())
	require.NoError(t, b.Close(context.Background()))
}

func TestConflictIsTerminal(t *testing.T) {
	t.Parallel()
	p := &poster{fail: func(int, schema.EventBatch) error {
		return &client.HTTPError{Method: "POST", Path: "/x", StatusCode: 409}
	}}
	b := Start(context.Background(), p, Options{Interval: time.Millisecond, Logger: quiet()})
	b.Add(ev(1))
	select {
	case <-b.Terminal():
	case <-time.After(5 * time.Second):
		t.Fatal("409 not surfaced as terminal")
	}
	b.Add(ev(2))
	require.Error(t, b.Close(context.Background()), "the events were not stored")
	require.Len(t, p.posts, 1, "no retries, no further posts")
}

// dispatcher answers batches through the real client: answer decides each
// post's fate by its number of the post (1, 2, ...).
func dispatcher(t *testing.T, answer func(n int, b schema.EventBatch, w http.ResponseWriter)) (*client.Client, func() []schema.EventBatch) {
	t.Helper()
	var mu sync.Mutex
	var posts []schema.EventBatch
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var bt schema.EventBatch
		_ = json.NewDecoder(r.Body).Decode(&bt)
		mu.Lock()
		posts = append(posts, bt)
		n := len(posts)
		mu.Unlock()
		answer(n, bt, w)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(client.Options{BaseURL: srv.URL, BuildID: "b", Token: "t", Logger: quiet(),
		Backoff:    client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	require.NoError(t, err)
	return c, func() []schema.EventBatch {
		mu.Lock()
		defer mu.Unlock()
		return append([]schema.EventBatch(nil), posts...)
	}
}

func problem(w http.ResponseWriter, code int, typ, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": typ, "title": http.StatusText(code), "status": code, "detail": detail})
}

// The dispatcher's 409 (the build ended) is final: one post, no retry, the
// build surfaced as terminal, and nothing posted after it.
func TestConflictStopsPostingWithoutRetries(t *testing.T) {
	t.Parallel()
	c, posts := dispatcher(t, func(n int, b schema.EventBatch, w http.ResponseWriter) {
		if n == 1 {
			_ = json.NewEncoder(w).Encode(schema.EventBatchAck{Stored: len(b.Events), Status: schema.StatusRunning})
			return
		}
		problem(w, 409, "about:blank", "build is cancelled; events are not accepted after the build ended")
	})
	b := Start(context.Background(), c, Options{MaxEvents: 2, Interval: time.Millisecond, Logger: quiet()})
	b.Add(ev(1))
	b.Add(ev(2))
	b.Add(ev(3))
	select {
	case <-b.Terminal():
	case <-time.After(5 * time.Second):
		t.Fatal("409 not surfaced as terminal")
	}
	for i := range 20 {
		b.Add(ev(4 + i))
	}
	require.ErrorContains(t, b.Close(context.Background()), "21 events not posted")
	got := posts()
	require.Len(t, got, 2, "batch 1, then batch 2 once: no retry, nothing after")
	require.EqualValues(t, 2, got[1].Batch)
}

// A per-build event cap is final for events: posting stops (no retry, no
// later batch) but the build is not terminal.
func TestCapStopsEvents(t *testing.T) {
	t.Parallel()
	c, posts := dispatcher(t, func(n int, b schema.EventBatch, w http.ResponseWriter) {
		if n == 1 {
			_ = json.NewEncoder(w).Encode(schema.EventBatchAck{Stored: len(b.Events), Status: schema.StatusRunning})
			return
		}
		problem(w, 422, schema.ProblemRunnerCap, "events: the build has 2 events and may have at most 2 (the per-build cap)")
	})
	b := Start(context.Background(), c, Options{MaxEvents: 2, Interval: time.Millisecond, Logger: quiet()})
	for i := range 6 {
		b.Add(ev(i))
	}
	require.ErrorContains(t, b.Close(context.Background()), "4 events not posted")
	require.Len(t, posts(), 2, "no retry of the capped batch and no batch after it")
	select {
	case <-b.Terminal():
		t.Fatal("a cap is not the build's end")
	default:
	}
	require.Equal(t, schema.StatusRunning, b.Status())
}

// A rejected batch is dropped and its number reused, so numbers stay gapless.
func TestRejectedBatchReusesNumber(t *testing.T) {
	t.Parallel()
	p := &poster{fail: func(n int, _ schema.EventBatch) error {
		if n == 1 {
			return &client.HTTPError{Method: "POST", Path: "/x", StatusCode: 422}
		}
		return nil
	}}
	b := Start(context.Background(), p, Options{MaxEvents: 1, Interval: time.Millisecond, Logger: quiet()})
	b.Add(ev(1))
	b.Add(ev(2))
	err := b.Close(context.Background())
	require.ErrorContains(t, err, "1 events not posted")
	require.Len(t, p.stored, 1)
	require.EqualValues(t, 1, p.stored[0].Batch)
	require.EqualValues(t, 1, p.posts[1].Batch)
}

// Close gives up when its context ends; the post in flight is abandoned.
func TestCloseBounded(t *testing.T) {
	t.Parallel()
	p := &poster{}
	p.fail = func(int, schema.EventBatch) error { return nil }
	blocking := posterFunc(func(ctx context.Context, _ schema.EventBatch) (schema.EventBatchAck, error) {
		<-ctx.Done()
		return schema.EventBatchAck{}, errors.Join(errors.New("unreachable"), ctx.Err())
	})
	b := Start(context.Background(), blocking, Options{Interval: time.Millisecond, Logger: quiet()})
	b.Add(ev(1))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorContains(t, b.Close(ctx), "1 events not posted")
	require.Less(t, time.Since(start), 2*time.Second)
}

type posterFunc func(context.Context, schema.EventBatch) (schema.EventBatchAck, error)

func (f posterFunc) PostEvents(ctx context.Context, b schema.EventBatch) (schema.EventBatchAck, error) {
	return f(ctx, b)
}

func TestMaxBytesSplits(t *testing.T) {
	t.Parallel()
	p := &poster{}
	b := Start(context.Background(), p, Options{MaxBytes: 100, Interval: time.Millisecond, Logger: quiet()})
	big := make([]byte, 80)
	for i := range big {
		big[i] = 'a'
	}
	payload, _ := json.Marshal(string(big))
	for range 3 {
		b.Add(schema.EventInput{Type: schema.EventAgentText, Payload: payload})
	}
	require.NoError(t, b.Close(context.Background()))
	require.Len(t, p.stored, 3, "one event of ~80 bytes per 100-byte batch")
}
