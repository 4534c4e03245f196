package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/schema"
)

var (
	specOnce   sync.Once
	specRouter routers.Router
	specErr    error
)

func openAPIRouter(t *testing.T) routers.Router {
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(schema.OpenAPI)
		if err != nil {
			specErr = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = err
			return
		}
		doc.Servers = nil
		specRouter, specErr = legacy.NewRouter(doc)
	})
	require.NoError(t, specErr, "schema/openapi.yaml")
	return specRouter
}

// syncBuffer collects the server's logs.
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

type env struct {
	t     *testing.T
	db    *pgtest.DB
	app   *app.App
	srv   *httptest.Server
	admin string
	logs  *syncBuffer
	env   *apptest.Env // nil in tests of a dispatcher without a database
}

// setup starts a dispatcher with two workers, its options changed by opts.
func setup(t *testing.T, opts ...func(*app.Options)) *env {
	t.Helper()
	t.Parallel()
	logs := &syncBuffer{}
	o := app.Options{Workers: 2, Logger: slog.New(slog.NewJSONHandler(logs, nil)), AuthCacheTTL: time.Second}
	for _, f := range opts {
		f(&o)
	}
	a := apptest.New(t, o)
	return &env{t: t, db: a.DB, app: a.App, srv: a.Server, admin: a.Admin, logs: logs, env: a}
}

type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *resp) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.Body, v), "body: %s", r.Body)
}

func (r *resp) problem(t *testing.T) map[string]any {
	t.Helper()
	require.Equal(t, "application/problem+json", r.Header.Get("Content-Type"), "body: %s", r.Body)
	var p map[string]any
	r.decode(t, &p)
	return p
}

type reqOpt func(*http.Request)

func header(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

// do sends a request and checks the answer against schema/openapi.yaml.
func (e *env) do(method, path, token string, body any, opts ...reqOpt) *resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(e.t, err)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	require.NoError(e.t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, o := range opts {
		o(req)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	out := &resp{Status: res.StatusCode, Header: res.Header, Body: b}
	checkAgainstSpec(e.t, req, out)
	return out
}

func checkAgainstSpec(t *testing.T, req *http.Request, r *resp) {
	t.Helper()
	route, params, err := openAPIRouter(t).FindRoute(req)
	require.NoError(t, err, "%s %s is not in schema/openapi.yaml", req.Method, req.URL.Path)
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 r.Status,
		Header:                 r.Header,
		Body:                   io.NopCloser(bytes.NewReader(r.Body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	require.NoError(t, openapi3filter.ValidateResponse(context.Background(), in),
		"%s %s → %d does not match schema/openapi.yaml; body: %s", req.Method, req.URL.Path, r.Status, r.Body)
}

// project creates a project as admin and returns it.
func (e *env) project(name string) schema.Project {
	e.t.Helper()
	r := e.do("POST", "/projects", e.admin, map[string]any{"name": name})
	require.Equal(e.t, http.StatusCreated, r.Status, "%s", r.Body)
	var p schema.Project
	r.decode(e.t, &p)
	return p
}

// token issues a token scoped to projects.
func (e *env) token(name string, projectIDs ...string) string {
	e.t.Helper()
	return e.env.Token(name, projectIDs...)
}

func (e *env) submit(projectID, token string, spec any, opts ...reqOpt) *resp {
	e.t.Helper()
	return e.do("POST", "/projects/"+projectID+"/builds", token, spec, opts...)
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}
