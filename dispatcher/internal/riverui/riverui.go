// Package riverui mounts River's web UI (riverqueue.com/riverui) on the
// dispatcher at /riverui/, for admin tokens only: it shows every job's
// arguments, so a project token gets 403 and no token 401. It adds no
// behaviour of its own.
package riverui

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
)

// Prefix is where the UI is served.
const Prefix = "/riverui"

// UI is River's UI behind admin auth.
type UI struct {
	handler *riverui.Handler
	auth    *auth.Authenticator
}

// New builds the UI on client; Start must run before it serves.
func New(client *river.Client[pgx.Tx], a *auth.Authenticator, logger *slog.Logger) (*UI, error) {
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints:                riverui.NewEndpoints(client, nil),
		JobListHideArgsByDefault: true,
		Logger:                   logger.With("component", "riverui"),
		Prefix:                   Prefix,
	})
	if err != nil {
		return nil, err
	}
	return &UI{handler: h, auth: a}, nil
}

// Start starts the UI's background work; it runs until ctx ends.
func (u *UI) Start(ctx context.Context) error { return u.handler.Start(ctx) }

// ServeHTTP answers admins only.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
		problem(w, http.StatusUnauthorized, "Authorization: an admin Bearer token is required")
		return
	}
	who, err := u.auth.Authenticate(r.Context(), strings.TrimSpace(tok))
	switch {
	case errors.Is(err, auth.ErrInvalidToken):
		problem(w, http.StatusUnauthorized, "Authorization: the token is not valid")
		return
	case err != nil:
		problem(w, http.StatusInternalServerError, "internal error")
		return
	case !who.Admin:
		problem(w, http.StatusForbidden, "the River UI needs an admin token")
		return
	}
	u.handler.ServeHTTP(w, r)
}

func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
}
