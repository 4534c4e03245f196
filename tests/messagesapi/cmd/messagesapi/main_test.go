package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServesScriptsAndLogs(t *testing.T) {
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	ctx, cancel := context.WithCancel(t.Context())
	var log syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-script", "../../scripts/demo.json", "-addr-file", addrFile}, &log)
	}()
	var url string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(addrFile)
		url = strings.TrimSpace(string(b))
		return err == nil && url != ""
	}, 10*time.Second, 10*time.Millisecond)

	resp, err := http.Post(url+"/v1/messages", "application/json",
		strings.NewReader(`{"model":"m","tools":[{"name":"Read"}],"messages":[{"role":"user","content":"x"}]}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	require.Eventually(t, func() bool { return strings.Contains(log.String(), "turn status=200") }, 5*time.Second, 10*time.Millisecond)
	assert.Contains(t, log.String(), `script="demo" turn=0 attempt=0`)
	assert.Contains(t, log.String(), "listening on "+url+" with 1 script(s)")

	cancel()
	require.NoError(t, <-done)
}

func TestBadFlags(t *testing.T) {
	var log syncBuffer
	err := run(t.Context(), []string{"-script", filepath.Join(t.TempDir(), "none.json")}, &log)
	require.ErrorContains(t, err, "none.json")
	err = run(t.Context(), []string{"extra"}, &log)
	require.ErrorContains(t, err, `unexpected arguments ["extra"]`)
}
