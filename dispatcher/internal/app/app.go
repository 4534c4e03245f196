// Package app assembles the dispatcher from its parts (pool, River client,
// intake, API) for the serve command, the Lambda front door and tests. It owns
// start and stop order; it has no behaviour of its own.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"k8s.io/client-go/kubernetes"

	"github.com/kilnbuild/kiln/dispatcher/internal/api"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
	"github.com/kilnbuild/kiln/dispatcher/internal/events"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/launcher"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/metrics"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/riverui"
	"github.com/kilnbuild/kiln/dispatcher/internal/runnerapi"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/watcher"
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
	if !strings.Contains(url, "pool_max_conns") {
		// pgx's default (max(4, CPUs)) starves River's workers, the watcher
		// and the API together; the URL's pool_max_conns overrides this.
		cfg.MaxConns = 25
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
	Kube         *KubeOptions          // nil: no cluster; builds stay pending
	Metrics      http.Handler          // serves /metrics; default: the Registry's metrics
	Registry     *prometheus.Registry  // where the metrics live; default: a new registry (never the global one)
	Mount        func(r chi.Router, authed func(http.Handler) http.Handler)

	// Event streams and callbacks.
	EventBuffer       int                     // events waiting for one live subscriber before it is dropped; default 256
	EventHeartbeat    time.Duration           // idle SSE/WebSocket heartbeat; default 15s
	CallbackAllowlist []netip.Prefix          // addresses callbacks may reach although refused by default
	CallbackTimeout   time.Duration           // one callback attempt; default 10s
	CallbackMaxAge    time.Duration           // how long failed callbacks are retried; default 24h
	CallbackBackoff   func(int) time.Duration // wait before retry n; default callback.DefaultBackoff
	CallbackWorkers   int                     // concurrent callback deliveries; default 10
}

// KubeOptions connects the dispatcher to the cluster its builds run in.
type KubeOptions struct {
	Client               kubernetes.Interface
	Namespace            string        // where build Jobs run; default kiln-builds
	DispatcherURL        string        // the dispatcher's URL as the runner pods see it
	Image                string        // runner image override
	MaxInFlight          int           // global maximum of builds in flight; default 50
	RetryAfter           time.Duration // capacity re-check interval; default 2s
	ImagePullTimeout     time.Duration // default 2m
	UnschedulableTimeout time.Duration // default 5m
	ReconcileInterval    time.Duration // periodic reconcile on the River leader; default 30s
}

// App is an assembled dispatcher.
type App struct {
	Pool      *pgxpool.Pool
	Store     *store.Store
	River     *river.Client[pgx.Tx]
	Intake    *intake.Service
	Lifecycle *lifecycle.Lifecycle
	Runner    *runnerapi.Server
	RiverUI   *riverui.UI        // River's web UI at /riverui/ for admin tokens; nil in insert-only apps
	Launcher  *launcher.Launcher // nil without a cluster
	Watcher   *watcher.Watcher   // nil without a cluster
	Auth      *auth.Authenticator
	Events    *events.Hub
	Callbacks *callback.Worker
	Metrics   *metrics.Metrics
	Handler   http.Handler
	Logger    *slog.Logger

	workers int
	stopUI  context.CancelFunc
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
	a := &App{Pool: o.Pool, Store: store.New(o.Pool), Logger: logger, workers: o.Workers, Lifecycle: &lifecycle.Lifecycle{}}
	m, err := metrics.New(metrics.Options{Registry: o.Registry, Pool: o.Pool, RiverSchema: o.Schema,
		Templates: templates, Logger: logger, Workers: func() map[string]int {
			if a.workers == 0 || !a.started.Load() {
				return nil
			}
			return map[string]int{queue.QueueDispatch: a.workers, queue.QueueCallbacks: cmp.Or(o.CallbackWorkers, 10)}
		}})
	if err != nil {
		return nil, err
	}
	a.Metrics, a.Lifecycle.OnTransition = m, m.Transition
	a.Runner = &runnerapi.Server{Pool: o.Pool, Lifecycle: a.Lifecycle, Logger: logger.With("component", "runnerapi")}
	qo := queue.Options{Schema: o.Schema, Workers: o.Workers, Logger: logger}
	if k := o.Kube; k != nil && o.Workers > 0 {
		var err error
		a.Launcher, err = launcher.New(launcher.Options{Client: k.Client, Pool: o.Pool, Lifecycle: a.Lifecycle,
			Templates: templates, Namespace: k.Namespace, DispatcherURL: k.DispatcherURL, Image: k.Image,
			MaxInFlight: k.MaxInFlight, RetryAfter: k.RetryAfter, Logger: logger, OnLaunch: m.Launch})
		if err != nil {
			return nil, err
		}
		a.Watcher, err = watcher.New(watcher.Options{Client: k.Client, Pool: o.Pool, Lifecycle: a.Lifecycle,
			Results: a.Runner, Namespace: k.Namespace, ImagePullTimeout: k.ImagePullTimeout,
			UnschedulableTimeout: k.UnschedulableTimeout, Logger: logger, OnFailure: m.WatcherFailure})
		if err != nil {
			return nil, err
		}
		qo.Launcher = a.Launcher
		qo.Register = func(w *river.Workers) { river.AddWorker(w, &watcher.ReconcileWorker{Watcher: a.Watcher}) }
		qo.Periodic = []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(cmp.Or(k.ReconcileInterval, 30*time.Second)),
			func() (river.JobArgs, *river.InsertOpts) {
				return watcher.ReconcileArgs{}, &river.InsertOpts{Queue: queue.QueueDispatch}
			}, &river.PeriodicJobOpts{ID: "kiln_reconcile"})}
	}
	cw, err := callback.NewWorker(callback.Options{Pool: o.Pool, Guard: &callback.Guard{Allow: o.CallbackAllowlist},
		Logger: logger, Timeout: o.CallbackTimeout, MaxAge: o.CallbackMaxAge, Backoff: o.CallbackBackoff,
		OnAttempt: m.Callback})
	if err != nil {
		return nil, err
	}
	a.Callbacks = cw
	register := qo.Register
	qo.Register = func(w *river.Workers) {
		river.AddWorker(w, cw)
		if register != nil {
			register(w)
		}
	}
	qo.Queues = map[string]river.QueueConfig{queue.QueueCallbacks: {MaxWorkers: cmp.Or(o.CallbackWorkers, 10)}}
	if a.Events, err = events.NewHub(events.Options{Pool: o.Pool, Logger: logger, Buffer: o.EventBuffer}); err != nil {
		return nil, err
	}
	rc, err := queue.NewClient(o.Pool, qo)
	if err != nil {
		return nil, err
	}
	a.River, a.Lifecycle.River = rc, rc
	a.Auth = auth.NewAuthenticator(o.Pool, o.AuthCacheTTL)
	if o.Workers > 0 {
		if a.RiverUI, err = riverui.New(rc, a.Auth, logger); err != nil {
			return nil, fmt.Errorf("river ui: %w", err)
		}
	}
	if a.Intake, err = intake.New(intake.Options{Store: a.Store, River: rc, Templates: templates, Lifecycle: a.Lifecycle, Logger: logger}); err != nil {
		return nil, err
	}
	if a.Watcher != nil {
		a.Intake.AfterCancel = a.Watcher.Enqueue
	}
	metricsHandler := o.Metrics
	if metricsHandler == nil {
		metricsHandler = m.Handler()
	}
	a.Handler = api.NewServer(api.Options{
		Intake: a.Intake, Auth: a.Auth, Logger: logger, Ready: a.Ready, Metrics: metricsHandler, OnRequest: m.HTTP,
		Mount: func(r chi.Router, authed func(http.Handler) http.Handler) {
			a.Runner.Mount(r)
			if a.RiverUI != nil {
				r.Handle(riverui.Prefix, a.RiverUI)
				r.Handle(riverui.Prefix+"/*", a.RiverUI)
			}
			(&events.Handler{Hub: a.Events, Auth: a.Auth, Intake: a.Intake, Logger: logger,
				Heartbeat: o.EventHeartbeat}).Mount(r, authed)
			if o.Mount != nil {
				o.Mount(r, authed)
			}
		},
	})
	return a, nil
}

// Start starts intake's committers, the event hub, the watcher and River's
// workers (an insert-only app: the first two).
func (a *App) Start(ctx context.Context) error {
	if err := a.Intake.Start(ctx); err != nil {
		return err
	}
	if err := a.Events.Start(ctx); err != nil {
		return err
	}
	if a.RiverUI != nil {
		// The UI runs until Stop, not until the caller's context ends.
		var uiCtx context.Context
		uiCtx, a.stopUI = context.WithCancel(context.WithoutCancel(ctx))
		if err := a.RiverUI.Start(uiCtx); err != nil {
			return fmt.Errorf("starting the River UI: %w", err)
		}
	}
	if a.Watcher != nil {
		if err := a.Watcher.Start(ctx); err != nil {
			return err
		}
	}
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
	a.Intake.Stop()
	a.Events.Stop()
	if a.stopUI != nil {
		a.stopUI() // the UI's services stop on their own once their context ends
	}
	if a.workers == 0 {
		return nil
	}
	defer func() {
		if a.Watcher != nil {
			a.Watcher.Stop()
		}
	}()
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
