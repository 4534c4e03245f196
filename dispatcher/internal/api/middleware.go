package api

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
)

type ctxKey int

const ctxRequest ctxKey = 0

// requestState is per-request data the middlewares share; auth fills in who,
// and the request log reads it after the handler ran.
type requestState struct {
	id  string
	who *auth.Principal
}

func state(ctx context.Context) *requestState {
	s, _ := ctx.Value(ctxRequest).(*requestState)
	if s == nil {
		return &requestState{}
	}
	return s
}

func requestID(ctx context.Context) string { return state(ctx).id }

func principal(ctx context.Context) *auth.Principal { return state(ctx).who }

var safeRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// withRequestID takes a sane X-Request-Id from the caller or makes one, and
// echoes it in the answer.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !safeRequestID.MatchString(id) {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxRequest, &requestState{id: id})))
	})
}

// logRequests writes one structured line a request. It never logs headers.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			if rec := recover(); rec != nil {
				s.logger.ErrorContext(r.Context(), "panic serving request", "panic", rec, "request_id", requestID(r.Context()))
				if ww.Status() == 0 {
					s.writeError(ww, r, errors.New("panic"))
				}
			}
			route := chi.RouteContext(r.Context()).RoutePattern()
			if s.onRequest != nil {
				status := cmp.Or(ww.Status(), http.StatusOK)
				stream := status == http.StatusSwitchingProtocols ||
					strings.HasPrefix(ww.Header().Get("Content-Type"), "text/event-stream")
				s.onRequest(route, r.Method, status, time.Since(start), stream)
			}
			if route == "/healthz" || route == "/readyz" || route == "/metrics" {
				return
			}
			attrs := []any{"method", r.Method, "route", route, "path", r.URL.Path, "status", ww.Status(),
				"bytes", ww.BytesWritten(), "duration_ms", time.Since(start).Milliseconds(),
				"request_id", requestID(r.Context())}
			if p := principal(r.Context()); p != nil {
				attrs = append(attrs, "token", p.Name)
			}
			s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", slogAttrs(attrs)...)
		}()
		next.ServeHTTP(ww, r)
	})
}

func slogAttrs(kv []any) []slog.Attr {
	out := make([]slog.Attr, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, slog.Any(kv[i].(string), kv[i+1]))
	}
	return out
}

// requireAuth resolves the bearer token into a Principal, or answers 401.
func (s *Server) requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
			s.writeError(w, r, newProblem(http.StatusUnauthorized, "Authorization: a Bearer token is required"))
			return
		}
		p, err := s.auth.Authenticate(r.Context(), strings.TrimSpace(token))
		if errors.Is(err, auth.ErrInvalidToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln", error="invalid_token"`)
			s.writeError(w, r, newProblem(http.StatusUnauthorized, "Authorization: the token is not valid"))
			return
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		state(r.Context()).who = p
		next.ServeHTTP(w, r)
	})
}

func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := principal(r.Context()); p == nil || !p.Admin {
			s.writeError(w, r, newProblem(http.StatusForbidden, "this endpoint needs an admin token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
