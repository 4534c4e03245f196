package httpserve

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serve runs NewServer(h) on a loopback listener of at most maxConns
// connections and returns its address.
func serve(t *testing.T, h http.Handler, o Options, maxConns int) string {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", maxConns)
	require.NoError(t, err)
	srv := NewServer(h, o)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// rawRequest sends text on a new connection and returns everything the
// server sent until it closed the connection, or an error if it had not
// within a minute.
func rawRequest(t *testing.T, addr, text string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, text)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Minute)))
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestWithheldBodyIsCut(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"handler reads the body", func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.ReadAll(r.Body); err != nil {
				http.Error(w, "body: not received in time", http.StatusRequestTimeout)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
		{"handler answers without reading it", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusUnauthorized) // net/http then tries to discard the body
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			addr := serve(t, c.h, Options{BodyTimeout: time.Second}, 10)
			out, err := rawRequest(t, addr, "POST /x HTTP/1.1\r\nHost: kiln\r\nContent-Length: 100000\r\n\r\n{")
			require.NoError(t, err, "the server closes the connection; got so far: %q", out)
			assert.NotContains(t, out, "204", "the body never came")
		})
	}
}

// A request whose body arrives in time is served and the connection is kept.
func TestBodyInTimeIsServed(t *testing.T) {
	t.Parallel()
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestTimeout)
			return
		}
		fmt.Fprintf(w, "%d bytes", len(b))
	}), Options{BodyTimeout: 30 * time.Second}, 10)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	for range 2 {
		_, err = io.WriteString(c, "POST /x HTTP/1.1\r\nHost: kiln\r\nContent-Length: 5\r\n\r\nhello")
		require.NoError(t, err)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		assert.Equal(t, "5 bytes", string(b))
	}
}

// Stream lifts the deadlines: a stream outlives the body timeout, which
// ends a request that does not call it (its context is cancelled when the
// read deadline passes while net/http watches the connection).
func TestStreamOutlivesTheBodyTimeout(t *testing.T) {
	t.Parallel()
	const bound = time.Second
	stream := func(lift bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if lift {
				Stream(w)
			}
			w.Header().Set("Content-Type", "text/event-stream")
			tick := time.NewTicker(bound / 4)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-r.Context().Done():
					return
				case <-tick.C:
					fmt.Fprintf(w, ": tick %d\n\n", i)
					_ = http.NewResponseController(w).Flush()
				}
			}
		}
	}
	for _, lift := range []bool{true, false} {
		t.Run(fmt.Sprintf("lift=%v", lift), func(t *testing.T) {
			t.Parallel()
			addr := serve(t, stream(lift), Options{BodyTimeout: bound, WriteTimeout: bound}, 10)
			res, err := http.Get("http://" + addr + "/events")
			require.NoError(t, err)
			defer res.Body.Close()
			// Ticks come every bound/4 from the start: the 12th was written
			// after three bounds had passed.
			ticks := 0
			sc := bufio.NewScanner(res.Body)
			for ticks < 12 && sc.Scan() {
				if strings.HasPrefix(sc.Text(), ": tick") {
					ticks++
				}
			}
			if lift {
				assert.Equal(t, 12, ticks, "the stream stays open past the body and write deadlines: %v", sc.Err())
			} else {
				assert.Less(t, ticks, 12, "without Stream the deadline ends the request")
			}
		})
	}
}

// At the cap, a new connection closes one that waits idle for its next
// request (keep-alive) rather than waiting behind it; busy ones are kept.
func TestFullCapClosesIdleConnections(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			<-release
		}
		fmt.Fprint(w, "ok")
	}), Options{}, 2)
	var once sync.Once
	defer once.Do(func() { close(release) })
	get := func(c net.Conn, br *bufio.Reader, path string) error {
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: kiln\r\n\r\n"); err != nil {
			return err
		}
		require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Minute)))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		return res.Body.Close()
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	idle, idleR := dial()
	require.NoError(t, get(idle, idleR, "/"))
	busy, busyR := dial()
	_, err := io.WriteString(busy, "GET /busy HTTP/1.1\r\nHost: kiln\r\n\r\n")
	require.NoError(t, err)

	third, thirdR := dial()
	require.NoError(t, get(third, thirdR, "/"), "served: the idle connection made room")
	require.NoError(t, idle.SetReadDeadline(time.Now().Add(time.Minute)))
	_, err = idleR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the idle connection was closed")
	require.NoError(t, get(third, thirdR, "/"), "and the newcomer is kept alive")

	once.Do(func() { close(release) })
	require.NoError(t, busy.SetReadDeadline(time.Now().Add(time.Minute)))
	res, err := http.ReadResponse(busyR, nil)
	require.NoError(t, err, "the busy connection was kept")
	res.Body.Close()
}
