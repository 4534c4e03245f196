package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/schema"
)

// bodyBound is the --http-body-timeout of the servers below: short, so the
// tests see it pass.
const bodyBound = 2 * time.Second

// served is a `dispatcher serve` running in the test on its own schema.
type served struct {
	addr    string // host:port
	db      *pgtest.DB
	token   string // may use project
	project string // id
}

// addrSink reads serve's JSON log lines and passes on the address of its
// "serving" line.
type addrSink struct {
	mu   sync.Mutex
	buf  []byte
	addr chan string
}

func (s *addrSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	for {
		i := strings.IndexByte(string(s.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		var line struct{ Msg, Addr string }
		if json.Unmarshal(s.buf[:i], &line) == nil && line.Msg == "serving" {
			s.addr <- line.Addr
		}
		s.buf = s.buf[i+1:]
	}
}

// startServe runs serve with flags on a fresh schema, on a free loopback
// port, until the test ends.
func startServe(t *testing.T, flags ...string) *served {
	t.Helper()
	db := pgtest.New(t)
	p := apptest.Project(t, db.Pool, "web")
	tok, err := auth.Issue(context.Background(), db.Pool, "web-bot", false, []string{p.ID})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &addrSink{addr: make(chan string, 1)}
	done := make(chan error, 1)
	args := append([]string{"--listen-addr", "127.0.0.1:0", "--database-url", db.URL, "--db-schema", db.Schema,
		"--workers", "0", "--http-body-timeout", bodyBound.String()}, flags...)
	go func() { done <- serve(ctx, args, logs) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done, "serve shuts down cleanly")
	})
	select {
	case addr := <-logs.addr:
		return &served{addr: addr, db: db, token: tok, project: p.ID}
	case err := <-done:
		t.Fatalf("serve ended before serving: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("serve did not start within a minute")
	}
	return nil
}

func (s *served) url(path string) string { return "http://" + s.addr + path }

// withhold sends a request's headers declaring a body of 100000 bytes, and
// one byte of it, and reads what comes back until the server closes the
// connection. It fails if the server still holds the connection after a
// minute, many times the bound.
func (s *served) withhold(t *testing.T, path, token string) string {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer c.Close()
	head := "POST " + path + " HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
	if token != "" {
		head += "Authorization: Bearer " + token + "\r\n"
	}
	_, err = io.WriteString(c, head+"\r\n{")
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Minute)))
	b, err := io.ReadAll(c)
	require.NoError(t, err, "the server must close the connection of a client withholding its body; read so far: %q", b)
	return string(b)
}

func (s *served) submit(t *testing.T) string {
	t.Helper()
	return s.accept(t).TaskID
}

// accept submits a build and returns the 202's body.
func (s *served) accept(t *testing.T) schema.BuildAccepted {
	t.Helper()
	req, err := http.NewRequest("POST", s.url("/projects/"+s.project+"/builds"), strings.NewReader(`{"prompt":"p"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var acc schema.BuildAccepted
	require.Equal(t, http.StatusAccepted, res.StatusCode)
	require.NoError(t, json.NewDecoder(res.Body).Decode(&acc))
	return acc
}

func (s *served) builds(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM builds`).Scan(&n))
	return n
}

// TestServeCutsWithheldBodies: a client that sends its headers and never its
// declared body loses the connection once --http-body-timeout passes,
// whether or not the route reads the body before authenticating.
func TestServeCutsWithheldBodies(t *testing.T) {
	t.Parallel()
	s := startServe(t)
	path := "/projects/" + s.project + "/builds"
	var wg sync.WaitGroup
	out := make([]string, 2)
	for i, tok := range []string{"", s.token} {
		wg.Go(func() { out[i] = s.withhold(t, path, tok) })
	}
	wg.Wait()
	assert.Contains(t, out[0], "HTTP/1.1 401", "unauthenticated: answered, then closed")
	assert.NotContains(t, out[1], "HTTP/1.1 202", "authenticated: the build was never accepted")
	assert.Equal(t, 0, s.builds(t), "nothing stored")
	// The server keeps serving.
	res, err := http.Get(s.url("/healthz"))
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
}

// TestServeStreamsOutliveTheBodyTimeout: SSE and WebSocket event streams
// lift the per-request deadlines once authenticated, so they stay open past
// --http-body-timeout and still deliver the build's end.
func TestServeStreamsOutliveTheBodyTimeout(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--events-heartbeat", "500ms")
	id := s.submit(t)

	req, err := http.NewRequest("GET", s.url("/builds/"+id+"/events"), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Accept", "text/event-stream")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	sse := bufio.NewScanner(res.Body)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/builds/"+id+"/events/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + s.token}}})
	require.NoError(t, err)
	defer ws.CloseNow()
	_, first, err := ws.Read(ctx)
	require.NoError(t, err)
	assert.Contains(t, string(first), `"pending"`)

	time.Sleep(bodyBound + time.Second) // past the bound of both requests
	cr, err := http.NewRequest("POST", s.url("/builds/"+id+"/cancel"), nil)
	require.NoError(t, err)
	cr.Header.Set("Authorization", "Bearer "+s.token)
	cres, err := http.DefaultClient.Do(cr)
	require.NoError(t, err)
	cres.Body.Close()
	require.Equal(t, http.StatusOK, cres.StatusCode)

	var end string
	for sse.Scan() {
		if line := sse.Text(); line == "event: "+schema.SSEEnd {
			require.True(t, sse.Scan())
			end = sse.Text()
			break
		}
	}
	assert.Contains(t, end, `"status":"cancelled"`, "the SSE stream was still open when the build ended: %v", sse.Err())

	_, msg, err := ws.Read(ctx)
	require.NoError(t, err, "the WebSocket was still open when the build ended")
	assert.Contains(t, string(msg), `"cancelled"`)
	_, _, err = ws.Read(ctx)
	assert.Equal(t, websocket.StatusCode(schema.CloseBuildEnded), websocket.CloseStatus(err), "%v", err)
}

// TestServeCapsConnections: with --http-max-conns 3, a new connection makes
// room by closing an idle keep-alive one; with three streams open, the next
// one waits until one of them closes.
func TestServeCapsConnections(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--http-max-conns", "3")
	id := s.submit(t)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	// answer reads the next answer on c (headers only: a stream goes on).
	answer := func(c net.Conn, br *bufio.Reader, within time.Duration) (*http.Response, error) {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
		return http.ReadResponse(br, nil)
	}
	health := func(c net.Conn, br *bufio.Reader, within time.Duration) error {
		_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: kiln\r\n\r\n")
		require.NoError(t, err)
		res, err := answer(c, br, within)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	stream := func() net.Conn {
		c, br := dial()
		_, err := io.WriteString(c, "GET /builds/"+id+"/events HTTP/1.1\r\nHost: kiln\r\nAccept: text/event-stream\r\n"+
			"Authorization: Bearer "+s.token+"\r\n\r\n")
		require.NoError(t, err)
		res, err := answer(c, br, time.Minute)
		require.NoError(t, err, "a stream within the cap is served")
		require.Equal(t, http.StatusOK, res.StatusCode)
		return c
	}

	idle, idleR := dial()
	require.NoError(t, health(idle, idleR, time.Minute)) // then idle, kept alive
	first := stream()
	stream()
	stream() // the cap is full: the idle connection makes room
	require.NoError(t, idle.SetReadDeadline(time.Now().Add(time.Minute)))
	_, err := idleR.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the idle connection was closed for the newcomer")

	extra, br := dial()
	err = health(extra, br, time.Second)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "a fourth connection waits while three streams are open; got %v", err)

	require.NoError(t, first.Close())
	res, err := answer(extra, br, time.Minute)
	require.NoError(t, err, "served once one of the three closed")
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
}

// serve passes --public-url (trailing slash dropped) to the API: a
// submission's 202 links to the build's console page.
func TestServePublicURL(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--public-url", "https://kiln.example.com/")
	acc := s.accept(t)
	assert.Equal(t, "https://kiln.example.com/ui/builds/"+acc.TaskID, acc.ConsoleURL)
}
