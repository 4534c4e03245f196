// Package riverui mounts River's web UI (riverqueue.com/riverui) on the
// dispatcher at /riverui/, for admin tokens only: it shows every job's
// arguments, so a project token gets 403 and no token 401. Who the request
// acts as comes from the edge's authenticator, which the router runs before
// the UI. It adds no behaviour of its own.
package riverui

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
)

// Prefix is where the UI is served.
const Prefix = "/riverui"

// UI is River's UI behind admin auth.
type UI struct {
	handler *riverui.Handler
	serve   http.Handler
}

// New builds the UI on client; Start must run before it serves. Mount it
// behind edge.Authenticate.
func New(client *river.Client[pgx.Tx], logger *slog.Logger) (*UI, error) {
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints:                riverui.NewEndpoints(client, nil),
		JobListHideArgsByDefault: true,
		Logger:                   logger.With("component", "riverui"),
		Prefix:                   Prefix,
	})
	if err != nil {
		return nil, err
	}
	return &UI{handler: h, serve: edge.RequireAdmin("the River UI needs an admin token")(h)}, nil
}

// Start starts the UI's background work; it runs until ctx ends.
func (u *UI) Start(ctx context.Context) error { return u.handler.Start(ctx) }

// ServeHTTP answers admins only: a request without the edge's principal
// gets 401, a project token's 403.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) { u.serve.ServeHTTP(w, r) }
