package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStartsReportsAndStops runs the command: the env file names a
// Postgres admin URL that logs in and live pids, and cancelling stops both
// servers (their pids gone, their ports closed).
func TestStartsReportsAndStops(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "servers.env")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out strings.Builder
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-env-file", envFile}, &out) }()
	var vals map[string]string
	for i := 0; i < 1800 && vals == nil; i++ {
		select {
		case err := <-done:
			t.Fatalf("servers ended early: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if b, err := os.ReadFile(envFile); err == nil {
			vals = map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				k, v, _ := strings.Cut(l, "=")
				vals[k] = v
			}
		}
	}
	require.NotNil(t, vals, "no env file")
	fi, err := os.Stat(envFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the env file holds passwords")

	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	conn, err := pgx.Connect(pctx, vals["KILN_ADDON_POSTGRES_URL"])
	require.NoError(t, err, "the admin URL must log in")
	conn.Close(pctx)
	require.True(t, strings.HasPrefix(vals["KILN_ADDON_REDIS_URL"], "redis://default:"))
	redisHost := strings.TrimPrefix(vals["KILN_ADDON_REDIS_URL"], "redis://")
	redisHost = redisHost[strings.LastIndex(redisHost, "@")+1:]
	c, err := net.DialTimeout("tcp", redisHost, 5*time.Second)
	require.NoError(t, err, "redis must listen on %s", redisHost)
	c.Close()
	pids := []string{vals["POSTGRES_PID"], vals["REDIS_PID"]}
	for _, p := range pids {
		require.True(t, alive(t, p), "pid %s must be running", p)
	}

	cancel()
	require.NoError(t, <-done)
	for _, p := range pids {
		assert.False(t, alive(t, p), "pid %s must be gone after the command stops", p)
	}
	if c, err := net.DialTimeout("tcp", redisHost, time.Second); err == nil {
		c.Close()
		t.Errorf("redis still answers on %s", redisHost)
	}
}

func alive(t *testing.T, pid string) bool {
	t.Helper()
	var n int
	for _, ch := range pid {
		require.True(t, ch >= '0' && ch <= '9', "pid %q", pid)
		n = n*10 + int(ch-'0')
	}
	return syscall.Kill(n, 0) == nil
}
