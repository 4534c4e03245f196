package ratelimit_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/ratelimit"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

// do sends a request to the dispatcher (token "" sends none).
func do(t *testing.T, e *apptest.Env, method, path, token, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.Server.URL+path, rd)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.Server.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	a := answer{status: res.StatusCode, header: res.Header}
	_ = json.Unmarshal(b, &a.body)
	return a
}

// requireLimited checks a 429 problem answer whose Retry-After is within
// (0, max] seconds and whose detail names the limit.
func requireLimited(t *testing.T, a answer, max int, detail string) {
	t.Helper()
	require.Equal(t, http.StatusTooManyRequests, a.status, "%v", a.body)
	assert.Equal(t, "application/problem+json", a.header.Get("Content-Type"))
	secs, err := strconv.Atoi(a.header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After %q", a.header.Get("Retry-After"))
	assert.Positive(t, secs)
	assert.LessOrEqual(t, secs, max)
	assert.Equal(t, "https://kiln.dev/problems/rate-limited", a.body["type"])
	assert.EqualValues(t, 429, a.body["status"])
	assert.Contains(t, a.body["detail"], detail)
	assert.NotEmpty(t, a.body["request_id"], "the request id is in the problem, as in every other")
	assert.Equal(t, a.header.Get("X-Request-Id"), a.body["request_id"])
}

// One token over its write rate gets 429 with Retry-After and a problem
// body, and nothing is stored for it; another token, and the same token's
// reads, are not affected.
func TestTokenOverItsRate(t *testing.T) {
	t.Parallel()
	// One write token every 1000s: refills never happen during the test.
	e := apptest.New(t, app.Options{RateLimits: &ratelimit.Options{Writes: ratelimit.Limit{Rate: 0.001, Burst: 3},
		Reads: ratelimit.Limit{Rate: 0.001, Burst: 2}}})
	p := e.Project("web")
	a, b := e.Token("bot-a", p.ID), e.Token("bot-b", p.ID)
	spec := `{"prompt":"p"}`
	var first string
	for i := range 3 {
		r := do(t, e, "POST", "/projects/"+p.ID+"/builds", a, spec)
		require.Equal(t, http.StatusAccepted, r.status, "submission %d: %v", i, r.body)
		if first == "" {
			first = r.body["task_id"].(string)
		}
	}
	r := do(t, e, "POST", "/projects/"+p.ID+"/builds", a, spec)
	requireLimited(t, r, 1000, "rate limit: this token may make write requests at 0.001/s, burst 3")
	r = do(t, e, "POST", "/project/web/build", a, spec)
	requireLimited(t, r, 1000, "write requests")

	var n int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM builds`).Scan(&n))
	assert.Equal(t, 3, n, "a refused submission stores nothing")

	r = do(t, e, "POST", "/projects/"+p.ID+"/builds", b, spec)
	assert.Equal(t, http.StatusAccepted, r.status, "another token is not affected: %v", r.body)
	r = do(t, e, "GET", "/builds/"+first, a, "")
	assert.Equal(t, http.StatusOK, r.status, "reads have a bucket of their own")
	r = do(t, e, "POST", "/builds/"+first+"/cancel", a, "")
	requireLimited(t, r, 1000, "write requests") // a cancel is a write
	r = do(t, e, "GET", "/builds/"+first+"/events", a, "")
	assert.Equal(t, http.StatusOK, r.status, "the second read")
	r = do(t, e, "GET", "/builds/"+first+"/events", a, "")
	requireLimited(t, r, 1000, "read requests at 0.001/s, burst 2") // the events handler's routes are limited too
	r = do(t, e, "GET", "/builds/"+first, b, "")
	assert.Equal(t, http.StatusOK, r.status, "another token's reads are not affected")
}

// Requests without a valid token are limited per client address (every
// test client is 127.0.0.1): a flood of bad tokens is refused before it
// reaches authentication, and requests a token was accepted for are never
// counted.
func TestUnauthenticatedFromOneAddress(t *testing.T) {
	t.Parallel()
	e := apptest.New(t, app.Options{RateLimits: &ratelimit.Options{Anonymous: ratelimit.Limit{Rate: 0.001, Burst: 5}}})
	p := e.Project("web")
	bot := e.Token("bot", p.ID)
	for range 30 {
		require.Equal(t, http.StatusOK, do(t, e, "GET", "/projects", bot, "").status, "accepted tokens are not counted")
	}
	r := do(t, e, "GET", "/healthz", "", "")
	require.Equal(t, http.StatusOK, r.status)
	for i := range 4 {
		r := do(t, e, "GET", "/projects", "kiln_"+strings.Repeat("A", 43), "")
		require.Equal(t, http.StatusUnauthorized, r.status, "bad token %d", i)
	}
	r = do(t, e, "POST", "/projects/"+p.ID+"/builds", "not-even-a-kiln-token", `{"prompt":"p"}`)
	requireLimited(t, r, 1000, "this address may send requests without a valid token at 0.001/s, burst 5")
	r = do(t, e, "GET", "/healthz", "", "")
	requireLimited(t, r, 1000, "without a valid token")
	r = do(t, e, "GET", "/projects", bot, "")
	requireLimited(t, r, 1000, "without a valid token") // documented: the address is refused everything
}
