package api

import (
	"cmp"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
)

// logRequests writes one structured line a request. It never logs headers.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			if rec := recover(); rec != nil {
				s.logger.ErrorContext(r.Context(), "panic serving request", "panic", rec, "request_id", edge.RequestID(r.Context()))
				if ww.Status() == 0 {
					edge.Write(ww, r, errors.New("panic"))
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
			attrs := []slog.Attr{slog.String("method", r.Method), slog.String("route", route), slog.String("path", r.URL.Path),
				slog.Int("status", ww.Status()), slog.Int("bytes", ww.BytesWritten()),
				slog.Int64("duration_ms", time.Since(start).Milliseconds()), slog.String("request_id", edge.RequestID(r.Context()))}
			if p := edge.Principal(r.Context()); p != nil {
				attrs = append(attrs, slog.String("token", p.Name))
			}
			s.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		}()
		next.ServeHTTP(ww, r)
	})
}
