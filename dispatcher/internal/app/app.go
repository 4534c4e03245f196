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
	"github.com/kilnbuild/kiln/dispatcher/internal/console"
	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/events"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/launcher"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/metrics"
	"github.com/kilnbuild/kiln/dispatcher/internal/provision"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/ratelimit"
	"github.com/kilnbuild/kiln/dispatcher/internal/riverui"
	"github.com/kilnbuild/kiln/dispatcher/internal/runnerapi"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/watcher"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
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

	// Limits. AuthMissTTL is how long an unknown token is remembered as
	// such (0: not at all). RateLimits are the per-token and per-address
	// request limits, its Token set here (nil: none). StreamsPerToken caps
	// the event streams one token holds open (0: no cap); streams end
	// within a heartbeat of their token being revoked either way.
	AuthMissTTL     time.Duration
	RateLimits      *ratelimit.Options
	StreamsPerToken int

	// The web console (package console).
	PublicURL         string        // the console's public base URL (KILN_PUBLIC_URL); empty: no console_url links
	ConsoleSessionTTL time.Duration // how long a console sign-in lasts; default 12h
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
	CacheSyncTimeout     time.Duration // how long Start waits for the watcher's informers; default 1m

	// Managed projects (package provision).
	AddonURLs             map[string]string // add-on type → admin URL; a type without one is refused
	WorkspaceImage        string            // default workspace.DefaultImage
	WorkspaceEnv          map[string]string // env of every workspace
	RunnerServiceAccount  string            // default kiln-runner
	WorkspaceTimeout      time.Duration     // default 5m
	ProvisionStepAttempts int               // default 3
}

// App is an assembled dispatcher.
type App struct {
	Pool      *pgxpool.Pool
	Store     *store.Store
	River     *river.Client[pgx.Tx] // works the queues; nil in an insert-only app (Workers 0)
	Inserter  *river.Client[pgx.Tx] // insert-only: what the API and the lifecycle write jobs with
	Intake    *intake.Service
	Lifecycle *lifecycle.Lifecycle
	Runner    *runnerapi.Server
	RiverUI   *riverui.UI        // River's web UI at /riverui/ for admin tokens; nil in insert-only apps
	Launcher  *launcher.Launcher // nil without a cluster
	Provision *provision.Service // managed projects; nil without a cluster
	Watcher   *watcher.Watcher   // nil without a cluster
	Auth      *auth.Authenticator
	Sessions  *auth.Sessions   // console sign-ins
	Console   *console.Console // the web console at /ui/
	Events    *events.Hub
	Callbacks *callback.Worker
	Metrics   *metrics.Metrics
	Handler   http.Handler
	Logger    *slog.Logger

	workers  int
	starting atomic.Bool                   // Start was called
	started  atomic.Bool                   // Start finished and Stop was not called: ready
	stops    []func(context.Context) error // what Start started, in start order; Stop runs them backwards
}

// New assembles an App; nothing runs until Start. Every part is built once,
// here, in dependency order, from its Options; no part is changed after it is
// built. The one loop among them (the lifecycle wakes the watcher, which
// settles builds through the lifecycle) is broken by the watcher's work
// queue, which exists before both.
func New(o Options) (*App, error) {
	if o.Pool == nil {
		return nil, errors.New("app: Pool is required")
	}
	if o.Workers < 0 {
		return nil, errors.New("app: Workers must not be negative")
	}
	w := &wiring{o: o, logger: cmp.Or(o.Logger, slog.New(slog.DiscardHandler)), templates: o.Templates,
		kube: o.Kube, callbackWorkers: cmp.Or(o.CallbackWorkers, 10)}
	if w.templates == nil {
		w.templates = jobtemplates.Embedded()
	}
	if o.Workers == 0 {
		w.kube = nil // an insert-only app launches and watches nothing
	}
	w.a = &App{Pool: o.Pool, Store: store.New(o.Pool), Logger: w.logger, workers: o.Workers}
	for _, step := range []func() error{
		w.metrics,   // 1. every other part reports to them
		w.lifecycle, // 2. the insert-only River client and every status change
		w.movers,    // 3. what moves builds: the runner protocol, the launcher, the watcher, callbacks
		w.river,     // 4. the River client that works the queues, with every worker
		w.edge,      // 5. the API's parts and the router
	} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return w.a, nil
}

// wiring is what New builds an App with, step by step.
type wiring struct {
	a               *App
	o               Options
	logger          *slog.Logger
	templates       *jobtemplates.Catalog
	kube            *KubeOptions // nil: no cluster (or an insert-only app)
	callbackWorkers int
	wake            watcher.Queue // the watcher's queue, made before the lifecycle that wakes it
}

func (w *wiring) metrics() error {
	a, o := w.a, w.o
	var err error
	a.Metrics, err = metrics.New(metrics.Options{Registry: o.Registry, Pool: o.Pool, RiverSchema: o.Schema,
		Templates: w.templates, Logger: w.logger, Workers: func() map[string]int {
			if a.workers == 0 || !a.started.Load() {
				return nil
			}
			return map[string]int{queue.QueueDispatch: a.workers, queue.QueueCallbacks: w.callbackWorkers}
		},
		Informers: func() map[string]int {
			if a.Watcher == nil { // no cluster, or insert-only
				return nil
			}
			return a.Watcher.Cached()
		}})
	return err
}

// lifecycle builds the insert-only River client the lifecycle writes jobs
// with, and the lifecycle, whose changes go to metrics and (a cancel) to the
// watcher's queue.
func (w *wiring) lifecycle() error {
	a, o := w.a, w.o
	var err error
	if a.Inserter, err = queue.NewClient(o.Pool, queue.Options{Schema: o.Schema, Logger: w.logger}); err != nil {
		return err
	}
	if w.kube != nil {
		w.wake = watcher.NewQueue()
	}
	wake := w.wake
	a.Lifecycle, err = lifecycle.New(lifecycle.Options{Pool: o.Pool, River: a.Inserter, Logger: w.logger,
		OnTransition: func(b *store.Build) {
			a.Metrics.Transition(b)
			if a.Launcher != nil && b.Status.Terminal() {
				a.Launcher.Kick() // its slot may be free: admit the next build now
			}
			if wake != nil && b.Status == schema.StatusCancelled && b.JobName != "" {
				wake.Add(b.ID) // its Job goes now, not at the next reconcile
			}
		},
		OnStoppedResult: a.Metrics.StoppedResult})
	return err
}

func (w *wiring) movers() error {
	a, o, kube := w.a, w.o, w.kube
	var err error
	if a.Runner, err = runnerapi.New(runnerapi.Options{Pool: o.Pool, Lifecycle: a.Lifecycle, Logger: w.logger}); err != nil {
		return err
	}
	if kube != nil {
		if a.Launcher, err = launcher.New(launcher.Options{Client: kube.Client, Pool: o.Pool, Lifecycle: a.Lifecycle,
			Templates: w.templates, Namespace: kube.Namespace, DispatcherURL: kube.DispatcherURL, Image: kube.Image,
			MaxInFlight: kube.MaxInFlight, RetryAfter: kube.RetryAfter, River: a.Inserter, Logger: w.logger,
			OnLaunch: a.Metrics.Launch}); err != nil {
			return err
		}
		if a.Provision, err = provision.New(provision.Options{Pool: o.Pool, River: a.Inserter, Client: kube.Client,
			Lifecycle: a.Lifecycle, BuildsNamespace: kube.Namespace, RunnerServiceAccount: kube.RunnerServiceAccount,
			Image: kube.WorkspaceImage, Env: kube.WorkspaceEnv, AddonURLs: kube.AddonURLs, WorkspaceTimeout: kube.WorkspaceTimeout,
			StepAttempts: kube.ProvisionStepAttempts, OnStep: a.Metrics.ProvisionStep, OnDone: a.Metrics.Provisioned,
			Logger: w.logger}); err != nil {
			return err
		}
		if a.Watcher, err = watcher.New(watcher.Options{Client: kube.Client, Pool: o.Pool, Lifecycle: a.Lifecycle,
			Queue: w.wake, Namespace: kube.Namespace, ImagePullTimeout: kube.ImagePullTimeout,
			UnschedulableTimeout: kube.UnschedulableTimeout, CacheSyncTimeout: kube.CacheSyncTimeout, Logger: w.logger}); err != nil {
			return err
		}
	}
	a.Callbacks, err = callback.NewWorker(callback.Options{Pool: o.Pool, Guard: &callback.Guard{Allow: o.CallbackAllowlist},
		Logger: w.logger, Timeout: o.CallbackTimeout, MaxAge: o.CallbackMaxAge, Backoff: o.CallbackBackoff,
		OnAttempt: a.Metrics.Callback, PublicURL: o.PublicURL})
	return err
}

func (w *wiring) river() error {
	a, o := w.a, w.o
	if o.Workers == 0 {
		return nil
	}
	workers := river.NewWorkers()
	var launch queue.Launcher // nil without a cluster: builds stay pending
	if a.Launcher != nil {
		launch = a.Launcher
	}
	river.AddWorker(workers, queue.NewDispatchWorker(o.Pool, launch))
	river.AddWorker(workers, a.Callbacks)
	qo := queue.Options{Schema: o.Schema, Logger: w.logger, Workers: workers, DispatchWorkers: o.Workers,
		Queues: map[string]river.QueueConfig{queue.QueueCallbacks: {MaxWorkers: w.callbackWorkers}}}
	if a.Provision != nil {
		a.Provision.AddWorkers(workers)
		qo.Queues[provision.Queue] = river.QueueConfig{MaxWorkers: 5}
	}
	if a.Watcher != nil {
		river.AddWorker(workers, watcher.NewReconcileWorker(a.Watcher))
		qo.Periodic = []*river.PeriodicJob{watcher.PeriodicReconcile(w.kube.ReconcileInterval)}
	}
	var err error
	a.River, err = queue.NewClient(o.Pool, qo)
	return err
}

func (w *wiring) edge() error {
	a, o := w.a, w.o
	var err error
	a.Auth = auth.New(o.Pool, auth.Options{TTL: o.AuthCacheTTL, MissTTL: o.AuthMissTTL})
	// Who a request is from, for the limits: the token it authenticated with.
	tokenOf := func(r *http.Request) (string, bool) {
		if p := edge.Principal(r.Context()); p != nil {
			return p.TokenID, true
		}
		return "", false
	}
	var limit, limitAnonymous func(http.Handler) http.Handler
	if o.RateLimits != nil {
		lo := *o.RateLimits
		lo.Token = tokenOf
		limits, err := ratelimit.New(lo)
		if err != nil {
			return fmt.Errorf("rate limits: %w", err)
		}
		limit, limitAnonymous = limits.PerToken, limits.Anonymous
	}
	streams := ratelimit.NewStreams(ratelimit.StreamOptions{Token: tokenOf, Max: o.StreamsPerToken, Valid: a.Auth.Live,
		Logger: w.logger})
	if a.River != nil {
		if a.RiverUI, err = riverui.New(a.River, w.logger); err != nil {
			return fmt.Errorf("river ui: %w", err)
		}
	}
	io := intake.Options{Store: a.Store, Templates: w.templates, Lifecycle: a.Lifecycle, Logger: w.logger,
		OnFollowup: a.Metrics.Followup}
	if a.Provision != nil {
		io.Workspaces = a.Provision
	}
	if a.Intake, err = intake.New(io); err != nil {
		return err
	}
	if a.Events, err = events.NewHub(events.Options{Pool: o.Pool, Logger: w.logger, Buffer: o.EventBuffer}); err != nil {
		return err
	}
	streamsHandler := &events.Handler{Hub: a.Events, Intake: a.Intake, Logger: w.logger,
		Heartbeat: o.EventHeartbeat, Guard: streams}
	a.Sessions = auth.NewSessions(o.Pool, o.ConsoleSessionTTL)
	if a.Console, err = console.New(console.Options{Intake: a.Intake, Tokens: a.Auth, Sessions: a.Sessions,
		Events: streamsHandler, Limit: limit, PublicURL: o.PublicURL, RiverUI: a.RiverUI != nil, Logger: w.logger}); err != nil {
		return err
	}
	metricsHandler := o.Metrics
	if metricsHandler == nil {
		metricsHandler = a.Metrics.Handler()
	}
	a.Handler = api.NewServer(api.Options{
		Intake: a.Intake, Auth: a.Auth, Logger: w.logger, Ready: a.Ready, Metrics: metricsHandler, OnRequest: a.Metrics.HTTP,
		Limit: limit, LimitAnonymous: limitAnonymous, PublicURL: o.PublicURL,
		Mount: func(r chi.Router, authed func(http.Handler) http.Handler) {
			a.Runner.Mount(r)
			if a.RiverUI != nil { // for browsers: a console session or a Bearer token
				ui := console.RiverUIHeaders(a.Console.Authenticate(a.RiverUI))
				r.Handle(riverui.Prefix, ui)
				r.Handle(riverui.Prefix+"/*", ui)
			}
			streamsHandler.Mount(r, authed)
			a.Console.Mount(r)
			if o.Mount != nil {
				o.Mount(r, authed)
			}
		},
	})
	return nil
}

// Start starts the parts that run: intake's committers, the events hub, the
// River UI, the watcher and River's workers, in that order. If one fails, what was
// started is stopped again before Start returns the error.
func (a *App) Start(ctx context.Context) error {
	if !a.starting.CompareAndSwap(false, true) {
		return errors.New("app: already started")
	}
	start := func(name string, run func() error, stop func(context.Context) error) error {
		if err := run(); err != nil {
			_ = a.stopAll(context.WithoutCancel(ctx))
			return fmt.Errorf("starting %s: %w", name, err)
		}
		a.stops = append(a.stops, stop)
		return nil
	}
	if err := start("intake", func() error { return a.Intake.Start(ctx) },
		func(context.Context) error { a.Intake.Stop(); return nil }); err != nil {
		return err
	}
	if err := start("the events hub", func() error { return a.Events.Start(ctx) },
		func(context.Context) error { a.Events.Stop(); return nil }); err != nil {
		return err
	}
	if a.RiverUI != nil {
		// The UI runs until Stop, not until the caller's context ends.
		uiCtx, stopUI := context.WithCancel(context.WithoutCancel(ctx))
		if err := start("the River UI", func() error { return a.RiverUI.Start(uiCtx) },
			func(context.Context) error { stopUI(); return nil }); err != nil {
			stopUI()
			return err
		}
	}
	if a.Watcher != nil {
		if err := start("the watcher", func() error { return a.Watcher.Start(ctx) },
			func(context.Context) error { a.Watcher.Stop(); return nil }); err != nil {
			return err
		}
	}
	if a.Launcher != nil && a.River != nil {
		// Admission rounds wake the dispatch jobs River runs; started first
		// so those jobs sleep long while they wait (the rounds wake them).
		admitCtx, stopAdmit := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		if err := start("admission", func() error {
			go func() { defer close(done); a.Launcher.Run(admitCtx) }()
			return nil
		}, func(context.Context) error { stopAdmit(); <-done; return nil }); err != nil {
			stopAdmit()
			return err
		}
	}
	if a.River != nil {
		// Its jobs run under ctx's values but not its cancellation, as the
		// other parts do: a signal that cancels ctx must not cut every
		// running job short (each would fail, and log, on its own); Stop
		// lets them finish until its ctx ends.
		riverCtx := context.WithoutCancel(ctx)
		if err := start("river", func() error { return a.River.Start(riverCtx) }, func(ctx context.Context) error {
			if err := a.River.Stop(ctx); err != nil {
				return a.River.StopAndCancel(context.WithoutCancel(ctx))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	a.started.Store(true)
	return nil
}

// Stop stops what Start started, in reverse order: River first (letting
// running jobs finish until ctx ends), the watcher, the UI, the events hub,
// intake (which commits what was queued). It logs a line or so per part,
// not one per build: what the shutdown interrupts is left for the next
// replica (or the next start), not reported as a failure.
// It is safe without Start and more than once.
func (a *App) Stop(ctx context.Context) error {
	a.started.Store(false)
	return a.stopAll(ctx)
}

func (a *App) stopAll(ctx context.Context) error {
	var errs []error
	for i := len(a.stops) - 1; i >= 0; i-- {
		errs = append(errs, a.stops[i](ctx))
	}
	a.stops = nil
	return errors.Join(errs...)
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
