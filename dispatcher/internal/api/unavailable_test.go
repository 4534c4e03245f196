package api_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// With its database unreachable the API answers 503 with Retry-After — a
// condition worth retrying — not 500, and says so in a problem document
// that matches schema/openapi.yaml.
func TestDatabaseUnavailableIs503(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	pool, err := pgxpool.New(context.Background(), "postgres://postgres@"+dead+"/kiln?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	logs := &syncBuffer{}
	a, err := app.New(app.Options{Pool: pool, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	require.NoError(t, err)
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, logs: logs}

	r := e.do("POST", "/projects/"+uuid.NewString()+"/builds", "kiln_whatever", map[string]any{"prompt": "x"},
		header("Idempotency-Key", "k1"))
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "%s", r.Body)
	assert.Equal(t, "1", r.Header.Get("Retry-After"))
	assert.Contains(t, string(r.Body), "Idempotency-Key")
	assert.NotContains(t, logs.String(), "kiln_whatever", "the token is not logged")
	assert.True(t, strings.Contains(logs.String(), "database unavailable"), "logged as such: %s", logs.String())
}

// cutProxy forwards TCP connections to target until cut, which closes the
// listener and every connection: the database goes away mid-flight.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// The event endpoints answer 503 with Retry-After too while the database
// is unreachable, for a token the dispatcher still knows (its auth cache).
func TestEventEndpointsUnavailableAre503(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	u, err := url.Parse(db.URL)
	require.NoError(t, err)
	proxy := startProxy(t, u.Host)
	cfg, err := pgxpool.ParseConfig(strings.Replace(db.URL, u.Host, proxy.ln.Addr().String(), 1))
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = db.Schema
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	logs := &syncBuffer{}
	a, err := app.New(app.Options{Pool: pool, Schema: db.Schema, AuthCacheTTL: time.Hour,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	require.NoError(t, err)
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(srv.Close)
	admin, err := auth.Issue(context.Background(), db.Pool, "admin", true, nil)
	require.NoError(t, err)
	p := apptest.Project(t, db.Pool, "web")
	id := uuid.Must(uuid.NewV7()).String()
	_, err = store.InsertBuild(context.Background(), db.Pool, store.NewBuild{ID: id, ProjectID: p.ID,
		Spec: schema.BuildSpec{Prompt: "p"}, RequestedBy: "test"})
	require.NoError(t, err)
	e := &env{t: t, srv: srv, logs: logs}
	require.Equal(t, http.StatusOK, e.do("GET", "/builds/"+id+"/events", admin, nil).Status, "the token is now cached")

	proxy.cut()
	for _, tc := range []struct {
		path string
		opts []reqOpt
	}{
		{"/builds/" + id + "/events", nil},
		{"/builds/" + id + "/events", []reqOpt{header("Accept", "text/event-stream")}},
		{"/builds/" + id + "/events/ws", nil},
	} {
		r := e.do("GET", tc.path, admin, nil, tc.opts...)
		require.Equal(t, http.StatusServiceUnavailable, r.Status, "%s: %s", tc.path, r.Body)
		assert.Equal(t, "1", r.Header.Get("Retry-After"))
		assert.Equal(t, "https://kiln.dev/problems/unavailable", r.problem(t)["type"])
	}
	assert.Contains(t, logs.String(), "database unavailable")
	assert.NotContains(t, logs.String(), `"level":"ERROR"`, "an unreachable database is not an internal error")
}
