package api_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
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
