// Package app assembles the dispatcher from its parts (pool, River client,
// intake, API) for the serve command, the Lambda front door and tests. It owns
// start and stop order; it has no behaviour of its own.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kilnbuild/kiln/dispatcher/internal/api"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
)

// OpenPool connects to Postgres; a non-empty schema becomes the search_path.
func OpenPool(ctx context.Context, url, schema string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to database %s@%s/%s: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// Options configures New.
type Options struct {
	Pool         *pgxpool.Pool // required
	Schema       string        // River's schema; empty: search_path
	Workers      int           // dispatch workers; 0 makes an insert-only app (Lambda)
	Logger       *slog.Logger  // default: discard
	AuthCacheTTL time.Duration
	Templates    *jobtemplates.Catalog // default: jobtemplates.Embedded()
	Launcher     queue.Launcher
	Metrics      http.Handler
	Mount        func(r chi.Router, authed func(http.Handler) http.Handler)
}

// App is an assembled dispatcher.
type App struct {
	Pool      *pgxpool.Pool
	Store     *store.Store
	River     *river.Client[pgx.Tx]
	Intake    *intake.Service
	Lifecycle *lifecycle.Lifecycle
	Auth      *auth.Authenticator
	Handler   http.Handler
	Logger    *slog.Logger

	workers int
	started atomic.Bool
}

// New assembles an App; nothing runs until Start.
func New(o Options) (*App, error) {
	if o.Pool == nil {
		return nil, errors.New("app: Pool is required")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	templates := o.Templates
	if templates == nil {
		templates = jobtemplates.Embedded()
	}
	rc, err := queue.NewClient(o.Pool, queue.Options{Schema: o.Schema, Workers: o.Workers, Logger: logger, Launcher: o.Launcher})
	if err != nil {
		return nil, err
	}
	a := &App{Pool: o.Pool, Store: store.New(o.Pool), River: rc, Logger: logger, workers: o.Workers}
	a.Auth = auth.NewAuthenticator(o.Pool, o.AuthCacheTTL)
	a.Lifecycle = &lifecycle.Lifecycle{River: rc}
	a.Intake = &intake.Service{Store: a.Store, River: rc, Templates: templates, Lifecycle: a.Lifecycle}
	a.Handler = api.NewServer(api.Options{
		Intake: a.Intake, Auth: a.Auth, Logger: logger, Ready: a.Ready, Metrics: o.Metrics, Mount: o.Mount,
	})
	return a, nil
}

// Start starts River's workers (nothing for an insert-only app).
func (a *App) Start(ctx context.Context) error {
	if a.workers > 0 {
		if err := a.River.Start(ctx); err != nil {
			return fmt.Errorf("starting river: %w", err)
		}
	}
	a.started.Store(true)
	return nil
}

// Stop stops River, letting running jobs finish until ctx ends.
func (a *App) Stop(ctx context.Context) error {
	a.started.Store(false)
	if a.workers == 0 {
		return nil
	}
	if err := a.River.Stop(ctx); err != nil {
		return a.River.StopAndCancel(context.WithoutCancel(ctx))
	}
	return nil
}

// Ready reports whether the database answers and River is started.
func (a *App) Ready(ctx context.Context) error {
	if !a.started.Load() {
		return errors.New("river is not started")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := a.Pool.Ping(ctx); err != nil {
		return errors.New("database unreachable")
	}
	return nil
}
