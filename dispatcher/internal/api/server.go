package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/schema"
)

// Options configures NewServer.
type Options struct {
	Intake *intake.Service     // required
	Auth   *auth.Authenticator // required
	Logger *slog.Logger        // default: discard
	// Ready reports whether the service can take work (database reachable,
	// River started); nil means always ready.
	Ready func(ctx context.Context) error
	// Metrics serves /metrics; nil leaves it out.
	Metrics http.Handler
	// Mount adds more routes (event streams, runner protocol, River UI, ...);
	// authed is the edge's authenticator middleware, the API's own.
	Mount func(r chi.Router, authed func(http.Handler) http.Handler)
	// OnRequest, if set, learns of every answered request: its route
	// pattern ("" when none matched), method, status, time taken, and
	// whether it was an event stream (SSE or a WebSocket upgrade).
	OnRequest func(route, method string, status int, took time.Duration, stream bool)
	// Limit, if set, runs right after authentication on every
	// authenticated route, Mount's too (per-token rate limits).
	Limit func(http.Handler) http.Handler
	// LimitAnonymous, if set, runs first on every request, before routing
	// (per-address limits of requests without a valid token).
	LimitAnonymous func(http.Handler) http.Handler
	// PublicURL is the dispatcher's public base URL (KILN_PUBLIC_URL): a
	// build submission's 202 and a build carry console_url, the build's
	// page in the web console, under it. Empty: they carry none.
	PublicURL string
}

// Server is the HTTP API.
type Server struct {
	intake *intake.Service
	auth   *auth.Authenticator
	logger *slog.Logger
	ready  func(ctx context.Context) error
	router chi.Router

	publicURL string

	onRequest func(route, method string, status int, took time.Duration, stream bool)
}

// NewServer builds the router.
func NewServer(o Options) *Server {
	if o.Intake == nil || o.Auth == nil {
		panic("api: Intake and Auth are required")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{intake: o.Intake, auth: o.Auth, logger: logger.With("component", "api"), ready: o.Ready,
		onRequest: o.OnRequest, publicURL: o.PublicURL}
	r := chi.NewRouter()
	r.Use(edge.Requests(s.logger), s.logRequests)
	if o.LimitAnonymous != nil {
		r.Use(o.LimitAnonymous)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		edge.Write(w, r, edge.Errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		edge.Write(w, r, edge.Errorf(http.StatusMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
	})

	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) { edge.JSON(w, 200, map[string]string{"status": "ok"}) })
	r.Get("/readyz", s.readyz)
	r.Get("/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(schema.OpenAPI)
	})
	if o.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", o.Metrics)
	}

	authed := edge.Authenticate(s.auth)
	if o.Limit != nil {
		authenticate := authed
		authed = func(next http.Handler) http.Handler { return authenticate(o.Limit(next)) }
	}
	admin := edge.RequireAdmin("this endpoint needs an admin token")
	r.Group(func(r chi.Router) {
		r.Use(authed)
		r.With(admin).Post("/projects", s.createProject)
		r.Get("/projects", s.listProjects)
		r.Get("/projects/{id}", s.getProject)
		r.With(admin).Delete("/projects/{id}", s.deleteProject)
		r.Post("/projects/{id}/builds", s.submitBuild)
		r.Get("/projects/{id}/builds", s.listBuilds)
		r.Post("/project/{name}/build", s.submitBuildByName)
		r.With(admin).Post("/project/create-and-build", s.createAndBuild)
		r.Get("/builds/{taskId}", s.getBuild)
		r.Post("/builds/{taskId}/cancel", s.cancelBuild)
		r.Post("/builds/{taskId}/followups", s.submitFollowup)
		r.Get("/builds/{taskId}/artifacts/*", s.getArtifact)
	})
	if o.Mount != nil {
		o.Mount(r, authed)
	}
	s.router = r
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		if err := s.ready(r.Context()); err != nil {
			s.logger.WarnContext(r.Context(), "not ready", "error", err)
			edge.Write(w, r, edge.Unavailable(time.Second, "not ready: "+err.Error()))
			return
		}
	}
	edge.JSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
