package events

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// The hub's Start/Stop contract. (Its streams are tested through the whole
// dispatcher in events_test.go; the package's TestMain fails any test that
// leaves a goroutine behind.)

func newHub(t *testing.T, o Options) *Hub {
	t.Helper()
	h, err := NewHub(o)
	require.NoError(t, err)
	t.Cleanup(h.Stop)
	return h
}

// pendingBuild stores a project and a pending build in db and returns the build's id.
func pendingBuild(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	ctx := context.Background()
	p := &schema.Project{ID: uuid.NewString(), Name: "web", Namespace: "default", Workdir: "/w", GitRemote: "origin",
		GitBranch: "main", AuthorName: "Kiln", AuthorEmail: "k@localhost", MaxConcurrent: 1}
	require.NoError(t, store.CreateProject(ctx, db.Pool, p))
	id := uuid.Must(uuid.NewV7()).String()
	_, err := store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id, ProjectID: p.ID, Spec: schema.BuildSpec{Prompt: "p"}, RequestedBy: "test"})
	require.NoError(t, err)
	return id
}

// stopWithin calls Stop and fails the test if it has not returned in d (a
// hang, not a measurement: d is generous).
func stopWithin(t *testing.T, h *Hub, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { h.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("Stop did not return within %s", d)
	}
}

// Stop is safe without Start and twice; a stopped hub neither starts again
// nor takes subscribers.
func TestHubStopWithoutStartAndTwice(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	h := newHub(t, Options{Pool: db.Pool})
	h.Stop()
	h.Stop()
	_, err := h.Subscribe(context.Background(), uuid.NewString())
	require.ErrorIs(t, err, ErrStopped)
	require.ErrorIs(t, h.Start(context.Background()), ErrStopped)
	select {
	case <-h.done:
	default:
		t.Fatal("streams are told to end")
	}
}

// Before Start, Subscribe starts nothing and says why; after Stop it refuses too.
func TestHubSubscribeBeforeStartAndAfterStop(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	id := pendingBuild(t, db)
	h := newHub(t, Options{Pool: db.Pool})
	ctx := context.Background()
	_, err := h.Subscribe(ctx, id)
	require.ErrorIs(t, err, ErrNotStarted)
	assert.False(t, h.listening, "no listener before Start")

	require.NoError(t, h.Start(ctx))
	require.Error(t, h.Start(ctx), "a second Start")
	sub, err := h.Subscribe(ctx, id)
	require.NoError(t, err)
	h.Stop()
	h.Stop()
	_, err = h.Subscribe(ctx, id)
	require.ErrorIs(t, err, ErrStopped)
	sub.Close() // after Stop: a no-op, not a panic
}

// Stop waits for what Start began: once it returns, the listener's
// connection is closed and the feeds have ended, although the context Start
// was given never ended.
func TestHubStopWaitsForListenerAndFeeds(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	id := pendingBuild(t, db)
	h := newHub(t, Options{Pool: db.Pool})
	ctx := context.Background()
	require.NoError(t, h.Start(ctx))
	sub, err := h.Subscribe(ctx, id)
	require.NoError(t, err)
	defer sub.Close()
	listeners := func() (n int) {
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*)::int FROM pg_stat_activity WHERE application_name = $1`,
			"kiln-events "+db.Schema).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return listeners() == 1 }, 10*time.Second, 10*time.Millisecond)
	_, err = store.AppendEvent(ctx, db.Pool, id, schema.EventLog, map[string]any{"n": 1})
	require.NoError(t, err)
	select {
	case e := <-sub.C:
		assert.Equal(t, int64(2), e.Seq, "event 1 is the pending status, stored before Subscribe")
	case <-time.After(30 * time.Second):
		t.Fatal("no live event")
	}

	stopWithin(t, h, 30*time.Second)
	h.mu.Lock()
	assert.Empty(t, h.feeds)
	h.mu.Unlock()
	require.Eventually(t, func() bool { return listeners() == 0 }, 10*time.Second, 10*time.Millisecond,
		"the LISTEN connection is closed")
}

// A listener that cannot connect backs off; Stop does not wait for its
// backoff to pass.
func TestHubStopDuringReconnectBackoff(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	id := pendingBuild(t, db)

	// The pool reaches the database through BeforeConnect; the listener,
	// which copies the pool's connection settings without that hook, dials
	// a port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	cfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = db.Schema
	host, port := cfg.ConnConfig.Host, cfg.ConnConfig.Port
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = "127.0.0.1", uint16(dead), nil
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		cc.Host, cc.Port = host, port
		return nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	logged := &waitLog{msg: "events listener cannot connect; retrying", seen: make(chan struct{})}
	h := newHub(t, Options{Pool: pool, Logger: slog.New(logged)})
	h.reconnectDelay = time.Hour
	ctx := context.Background()
	require.NoError(t, h.Start(ctx), "the pool answers")
	sub, err := h.Subscribe(ctx, id)
	require.NoError(t, err)
	defer sub.Close()
	select {
	case <-logged.seen:
	case <-time.After(30 * time.Second):
		t.Fatalf("the listener did not fail to connect to port %s", strconv.Itoa(dead))
	}
	stopWithin(t, h, 30*time.Second)
}

// waitLog is a slog handler that closes seen when msg is logged.
type waitLog struct {
	msg  string
	seen chan struct{}
	once sync.Once
}

func (w *waitLog) Enabled(context.Context, slog.Level) bool { return true }
func (w *waitLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == w.msg {
		w.once.Do(func() { close(w.seen) })
	}
	return nil
}
func (w *waitLog) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *waitLog) WithGroup(string) slog.Handler      { return w }
