package ratelimit_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/ratelimit"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// serve sends one request through h and returns the recorder.
func serve(h http.Handler, method, remote string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/x", nil)
	r.RemoteAddr = remote
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func problem(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	require.Equal(t, http.StatusTooManyRequests, w.Code, w.Body.String())
	require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	var p map[string]any
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	assert.Equal(t, "https://kiln.dev/problems/rate-limited", p["type"])
	assert.Equal(t, "Too Many Requests", p["title"])
	assert.EqualValues(t, 429, p["status"])
	assert.Equal(t, "/x", p["instance"])
	return p
}

func TestPerToken(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Unix(1e9, 0)}
	l, err := ratelimit.New(ratelimit.Options{
		Token: func(r *http.Request) (string, bool) {
			v := r.Header.Get("X-Token")
			return v, v != ""
		},
		Reads: ratelimit.Limit{Rate: 1, Burst: 2}, Writes: ratelimit.Limit{Rate: 0.5, Burst: 1}, Now: clk.now})
	require.NoError(t, err)
	calls := 0
	h := l.PerToken(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++ }))
	a := map[string]string{"X-Token": "a"}

	for range 2 {
		require.Equal(t, 200, serve(h, "GET", "192.0.2.1:1", a).Code)
	}
	w := serve(h, "GET", "192.0.2.1:1", a)
	p := problem(t, w)
	assert.Equal(t, "1", w.Header().Get("Retry-After"))
	assert.Equal(t, "rate limit: this token may make read requests at 1/s, burst 2; retry in 1s", p["detail"])
	assert.Equal(t, 2, calls, "a refused request does not reach the handler")

	assert.Equal(t, 200, serve(h, "POST", "192.0.2.1:1", a).Code, "writes have a bucket of their own")
	w = serve(h, "DELETE", "192.0.2.1:1", a)
	p = problem(t, w)
	assert.Equal(t, "2", w.Header().Get("Retry-After"), "one token at 0.5/s is 2s away")
	assert.Contains(t, p["detail"], "write requests at 0.5/s, burst 1")
	assert.Equal(t, 200, serve(h, "HEAD", "192.0.2.1:1", map[string]string{"X-Token": "b"}).Code, "another token is not affected")
	assert.Equal(t, 200, serve(h, "GET", "192.0.2.1:1", nil).Code, "a request without a token passes")

	clk.t = clk.t.Add(time.Second)
	assert.Equal(t, 200, serve(h, "GET", "192.0.2.1:1", a).Code, "a token refilled")
	assert.Equal(t, 429, serve(h, "GET", "192.0.2.1:1", a).Code)
}

// The anonymous limit counts, per address, requests without an
// Authorization header and requests answered 401; while it is exhausted
// the address is refused everything.
func TestAnonymous(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Unix(1e9, 0)}
	l, err := ratelimit.New(ratelimit.Options{Anonymous: ratelimit.Limit{Rate: 0.1, Burst: 3}, Now: clk.now,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	require.NoError(t, err)
	h := l.Anonymous(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
		}
		_ = http.NewResponseController(w).Flush() // SSE flushes through the wrapper
	}))
	good := map[string]string{"Authorization": "Bearer good"}
	bad := map[string]string{"Authorization": "Bearer bad"}

	for range 20 {
		require.Equal(t, 200, serve(h, "GET", "192.0.2.1:1", good).Code, "accepted tokens are not counted")
	}
	assert.Equal(t, 401, serve(h, "GET", "192.0.2.1:1", bad).Code)
	assert.Equal(t, 401, serve(h, "GET", "192.0.2.1:2", nil).Code, "no header: counted (another port, same address)")
	w := serve(h, "GET", "192.0.2.1:3", bad)
	assert.Equal(t, 401, w.Code)
	assert.True(t, w.Flushed, "the wrapper flushes")
	w = serve(h, "GET", "192.0.2.1:1", bad)
	p := problem(t, w)
	assert.Equal(t, "10", w.Header().Get("Retry-After"))
	assert.Contains(t, p["detail"], "this address may send requests without a valid token at 0.1/s, burst 3")
	assert.Equal(t, 429, serve(h, "GET", "192.0.2.1:1", good).Code, "while exhausted, a valid token is refused too")
	assert.Equal(t, 401, serve(h, "GET", "192.0.2.2:1", bad).Code, "another address has its own bucket")

	// IPv6 addresses share the bucket of their /64.
	for range 3 {
		serve(h, "GET", "[2001:db8:1:2::1]:1", bad)
	}
	assert.Equal(t, 429, serve(h, "GET", "[2001:db8:1:2:ffff::9]:1", bad).Code, "same /64")
	assert.Equal(t, 401, serve(h, "GET", "[2001:db8:1:3::1]:1", bad).Code, "another /64")

	// X-Forwarded-For counts only from a trusted proxy.
	spoof := map[string]string{"Authorization": "Bearer bad", "X-Forwarded-For": "198.51.100.7"}
	assert.Equal(t, 429, serve(h, "GET", "192.0.2.1:1", spoof).Code, "an untrusted peer cannot pick its address")
	for range 3 {
		assert.Equal(t, 401, serve(h, "GET", "10.1.1.1:1", spoof).Code)
	}
	assert.Equal(t, 429, serve(h, "GET", "10.2.2.2:1", spoof).Code, "the client behind any trusted proxy is one client")
	assert.Equal(t, 401, serve(h, "GET", "10.1.1.1:1", bad).Code, "the proxy's own requests are the proxy's")

	clk.t = clk.t.Add(10 * time.Second)
	assert.Equal(t, 401, serve(h, "GET", "192.0.2.1:1", bad).Code, "refilled")
	assert.Equal(t, 429, serve(h, "GET", "192.0.2.1:1", bad).Code)
}

func TestClientAddress(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, c := range []struct {
		remote, xff string
		want        string
	}{
		{"192.0.2.1:443", "", "192.0.2.1"},
		{"192.0.2.1:443", "198.51.100.1", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:443", "", "192.0.2.1"},
		{"[2001:db8::1]:443", "", "2001:db8::1"},
		{"192.0.2.9", "", "192.0.2.9"}, // no port, as the Lambda front door sets it
		{"10.0.0.1:80", "", "10.0.0.1"},
		{"10.0.0.1:80", "198.51.100.1", "198.51.100.1"},
		{"10.0.0.1:80", "203.0.113.5, 198.51.100.1, 10.0.0.2", "198.51.100.1"},
		{"10.0.0.1:80", "10.0.0.3, 10.0.0.2", "10.0.0.1"},
		{"10.0.0.1:80", "198.51.100.1, junk", "10.0.0.1"},
		{"[fd00::1]:80", "2001:db8::7", "2001:db8::7"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		got, ok := ratelimit.ClientAddress(r, trusted)
		require.True(t, ok, c)
		assert.Equal(t, c.want, got.String(), c)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "pipe"
	_, ok := ratelimit.ClientAddress(r, nil)
	assert.False(t, ok, "no address: not limited by address")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := ratelimit.New(ratelimit.Options{Writes: ratelimit.Limit{Rate: 1}})
	assert.ErrorContains(t, err, "Writes: burst must be at least 1")
	_, err = ratelimit.New(ratelimit.Options{Reads: ratelimit.Limit{Burst: 3}})
	assert.ErrorContains(t, err, "Reads: rate must be positive")
	_, err = ratelimit.New(ratelimit.Options{Reads: ratelimit.Unlimited})
	assert.NoError(t, err)
}
