package edge_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
)

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header []string
		token  string // "": none
	}{
		{[]string{"Bearer kiln_x"}, "kiln_x"},
		{[]string{"bearer kiln_x"}, "kiln_x"}, // RFC 9110 11.1: the scheme is case-insensitive
		{[]string{"BEARER kiln_x"}, "kiln_x"},
		{[]string{"bEaReR kiln_x"}, "kiln_x"},
		{[]string{"Bearer   kiln_x  "}, "kiln_x"},
		{[]string{"Bearer\tkiln_x"}, ""}, // the scheme ends at a space
		{[]string{"Bearer"}, ""},
		{[]string{"Bearer "}, ""},
		{[]string{"Bearer kiln_x kiln_y"}, ""},
		{[]string{"Basic a2lsbjp4"}, ""},
		{[]string{"Bearerkiln_x"}, ""},
		{[]string{"kiln_x"}, ""},
		{[]string{""}, ""},
		{nil, ""},
		{[]string{"Bearer kiln_x", "Bearer kiln_y"}, ""}, // two: which one? neither
	} {
		r := httptest.NewRequest("GET", "/", nil)
		for _, v := range tc.header {
			r.Header.Add("Authorization", v)
		}
		tok, ok := edge.BearerToken(r)
		assert.Equal(t, tc.token != "", ok, "%q", tc.header)
		assert.Equal(t, tc.token, tok, "%q", tc.header)
	}
}

// Authenticate resolves the token once; the principal is what handlers
// and the request log behind it see.
func TestAuthenticate(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	a := auth.New(db.Pool, auth.Options{})
	admin, err := auth.Issue(context.Background(), db.Pool, "root", true, nil)
	require.NoError(t, err)
	bot, err := auth.Issue(context.Background(), db.Pool, "bot", false, nil)
	require.NoError(t, err)

	var who string
	var seenByLog string
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who = edge.Principal(r.Context()).Name
		w.WriteHeader(204)
	})
	h := edge.Requests(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		edge.Authenticate(a)(inner).ServeHTTP(w, r)
		if p := edge.Principal(r.Context()); p != nil { // as the API's request log reads it
			seenByLog = p.Name
		}
	}))
	admins := edge.Requests(nil)(edge.Authenticate(a)(edge.RequireAdmin("admins only")(inner)))
	do := func(h http.Handler, authz string) *httptest.ResponseRecorder {
		who, seenByLog = "", ""
		r := httptest.NewRequest("GET", "/", nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		rec := do(h, scheme+" "+bot)
		assert.Equal(t, 204, rec.Code, scheme)
		assert.Equal(t, "bot", who, scheme)
		assert.Equal(t, "bot", seenByLog, "the state outside the middleware learns the principal")
	}
	rec := do(h, "")
	assert.Equal(t, 401, rec.Code)
	assert.Equal(t, `Bearer realm="kiln"`, rec.Header().Get("WWW-Authenticate"))
	rec = do(h, "Basic "+bot)
	assert.Equal(t, 401, rec.Code)
	rec = do(h, "Bearer kiln_unknown")
	assert.Equal(t, 401, rec.Code)
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), "invalid_token")
	assert.Contains(t, rec.Body.String(), "Authorization: the token is not valid")
	assert.Empty(t, who)

	assert.Equal(t, 403, do(admins, "bearer "+bot).Code)
	assert.Equal(t, 204, do(admins, "bearer "+admin).Code)
	assert.Equal(t, 401, do(edge.RequireAdmin("x")(inner), "").Code, "no principal: never through")

	// The token store is unreachable: 503 to retry, not 401 or 500.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	ln.Close()
	pool, err := pgxpool.New(context.Background(), "postgres://postgres@"+dead+"/kiln?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	defer pool.Close()
	rec = do(edge.Requests(quiet)(edge.Authenticate(auth.New(pool, auth.Options{}))(inner)), "Bearer "+bot)
	assert.Equal(t, 503, rec.Code, rec.Body.String())
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
	assert.Empty(t, who)
}

// A request refused before its body is read (here: no token) is answered
// at once, without waiting for a body the client declared but never sends,
// and its connection is closed.
func TestRefusedBodyIsNotWaitedFor(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(edge.Requests(quiet)(edge.Authenticate(auth.New(nil, auth.Options{}))(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("reached the handler") }))))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, declared := range []string{"10", "100000", "100000000"} {
		res, body, _ := rawRequest(t, addr, "POST /projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Content-Length: "+declared+"\r\n\r\n")
		assert.Equal(t, 401, res.StatusCode, declared)
		assert.True(t, res.Close, "Connection: close (%s)", declared)
		assert.Contains(t, string(body), "Authorization: a Bearer token is required")
	}
	// A request without a body keeps its connection.
	res, err := http.Get(srv.URL)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 401, res.StatusCode)
	assert.False(t, res.Close, "no body to drop: the connection stays open")
}

func TestPathID(t *testing.T) {
	t.Parallel()
	const id = "0190f1c5-7a3b-7000-8000-00000000abcd"
	var got string
	var ok bool
	r := chi.NewRouter()
	r.Get("/builds/{taskId}", func(w http.ResponseWriter, r *http.Request) { got, ok = edge.PathID(r, "taskId") })
	for path, want := range map[string]bool{
		"/builds/" + id:                                true,
		"/builds/" + strings.ToUpper(id):               false,
		"/builds/urn:uuid:" + id:                       false,
		"/builds/%7B" + id + "%7D":                     false,
		"/builds/" + strings.ReplaceAll(id, "-", ""):   false,
		"/builds/" + id[:35]:                           false,
		"/builds/" + id + "0":                          false,
		"/builds/0190f1c5-7a3b-7000-8000-00000000abcg": false,
		"/builds/0190f1c5-7a3b-7000-8000_00000000abcd": false,
		"/builds/not-a-uuid":                           false,
		"/builds/%00":                                  false,
	} {
		got, ok = "", false
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
		assert.Equal(t, want, ok, path)
		if want {
			assert.Equal(t, id, got)
		}
	}
}

func TestPathText(t *testing.T) {
	t.Parallel()
	var ok bool
	r := chi.NewRouter()
	r.Get("/p/{name}", func(w http.ResponseWriter, r *http.Request) { _, ok = edge.PathText(r, "name") })
	for path, want := range map[string]bool{"/p/web": true, "/p/w%C3%A9b": true, "/p/a%00b": false, "/p/a%FFb": false} {
		ok = false
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
		assert.Equal(t, want, ok, path)
	}
}

func TestHeaderText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value, rule string // rule "": accepted
	}{
		{"req-42", ""},
		{"", ""},
		{"clé-✓", ""},
		{strings.Repeat("k", 255), ""},
		{strings.Repeat("k", 256), "must be at most 255 bytes"},
		{strings.Repeat("é", 128), "must be at most 255 bytes"}, // 256 bytes
		{"a\xffb", "must be valid UTF-8"},
		{"a\x00b", "must not contain control characters (got U+0000)"},
		{"a\x1bb", "must not contain control characters (got U+001B)"},
		{"a\u0085b", "must not contain control characters (got U+0085)"},
	} {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header["Idempotency-Key"] = []string{tc.value}
		v, err := edge.HeaderText(r, "Idempotency-Key", 255)
		if tc.rule == "" {
			assert.NoError(t, err, "%q", tc.value)
			assert.Equal(t, tc.value, v)
			continue
		}
		var e *edge.Error
		require.ErrorAs(t, err, &e, "%q", tc.value)
		assert.Equal(t, 400, e.Status)
		assert.Equal(t, "Idempotency-Key: "+tc.rule, e.Detail)
		assert.Equal(t, "Idempotency-Key", e.Errors[0].Field)
	}
}

var quiet = slog.New(slog.DiscardHandler)
