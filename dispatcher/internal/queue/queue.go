package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// QueueDispatch is the River queue build dispatch jobs run on.
const QueueDispatch = "dispatch"

// DispatchArgs asks for a build to be launched.
type DispatchArgs struct {
	BuildID   string `json:"build_id"`
	ProjectID string `json:"project_id"`
}

// Kind implements river.JobArgs.
func (DispatchArgs) Kind() string { return "kiln_dispatch" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (DispatchArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueDispatch, MaxAttempts: 25}
}

// Launcher turns a pending build into a running one. The dispatch worker
// calls it; it returns river.JobSnooze to wait for capacity.
type Launcher interface {
	Launch(ctx context.Context, b *store.Build) error
}

// DispatchWorker runs DispatchArgs jobs.
type DispatchWorker struct {
	river.WorkerDefaults[DispatchArgs]
	DB       store.DB
	Launcher Launcher // nil: builds stay pending and the job waits
	Logger   *slog.Logger
}

// Work implements river.Worker.
func (w *DispatchWorker) Work(ctx context.Context, job *river.Job[DispatchArgs]) error {
	b, err := store.GetBuild(ctx, w.DB, job.Args.BuildID)
	if errors.Is(err, store.ErrNotFound) {
		// Cannot happen while invariant 1 (docs/design.md) holds; nothing to launch.
		return river.JobCancel(fmt.Errorf("build %s has no audit row", job.Args.BuildID))
	}
	if err != nil {
		return err
	}
	if b.Status != schema.StatusPending {
		return nil // cancelled while queued, or already launched by an earlier attempt
	}
	if w.Launcher == nil {
		return river.JobSnooze(time.Minute)
	}
	return w.Launcher.Launch(ctx, b)
}

// Options configures NewClient.
type Options struct {
	Schema     string       // Postgres schema of River's tables; default: search_path
	Workers    int          // dispatch workers; 0 builds an insert-only client
	Logger     *slog.Logger // default: discard
	Launcher   Launcher
	Register   func(*river.Workers) // adds more workers (callbacks, ...)
	Queues     map[string]river.QueueConfig
	PollOnly   bool // no LISTEN/NOTIFY (for poolers that cannot hold it)
	DB         store.DB
	JobTimeout time.Duration // default 20s
	Periodic   []*river.PeriodicJob
	// RescueStuckJobsAfter: how soon a job whose worker died (kill -9) runs
	// again; default 30s. Every Kiln job is short (a launch is a few API
	// calls, a callback attempt is bounded by its timeout), so JobTimeout is
	// 20s and a job still "running" after 30s was lost with its process.
	RescueStuckJobsAfter time.Duration
}

// NewClient returns a River client on pool. With Workers == 0 it only inserts.
func NewClient(pool *pgxpool.Pool, o Options) (*river.Client[pgx.Tx], error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := &river.Config{
		Schema:               o.Schema,
		Logger:               logger.With("component", "river"),
		JobTimeout:           o.JobTimeout,
		PollOnly:             o.PollOnly,
		RescueStuckJobsAfter: o.RescueStuckJobsAfter,
		// Inserts notify the queue at most once per interval; jobs inserted
		// in between wait for the next fetch. Short intervals keep the
		// submit → Job latency low at the cost of a few cheap queries.
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 250 * time.Millisecond,
	}
	if cfg.RescueStuckJobsAfter == 0 {
		cfg.RescueStuckJobsAfter = 30 * time.Second
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = 20 * time.Second
	}
	if o.Workers > 0 {
		workers := river.NewWorkers()
		db := o.DB
		if db == nil {
			db = pool
		}
		river.AddWorker(workers, &DispatchWorker{DB: db, Launcher: o.Launcher, Logger: logger})
		if o.Register != nil {
			o.Register(workers)
		}
		cfg.Workers = workers
		cfg.PeriodicJobs = o.Periodic
		cfg.Queues = map[string]river.QueueConfig{QueueDispatch: {MaxWorkers: o.Workers,
			// An insert notifies at most once per FetchCooldown, so a build
			// inserted just after another's notification can miss the fetch
			// it triggered and wait for the poll: poll the dispatch queue
			// often enough that this costs tens of milliseconds, not hundreds.
			FetchPollInterval: DispatchPollInterval}}
		for k, v := range o.Queues {
			cfg.Queues[k] = v
		}
	}
	c, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return nil, fmt.Errorf("creating river client: %w", err)
	}
	return c, nil
}

// DispatchPollInterval is how often a dispatcher polls the dispatch queue
// besides being notified of inserts: one cheap indexed query each time.
const DispatchPollInterval = 50 * time.Millisecond

// QueueCallbacks is the River queue callback deliveries run on.
const QueueCallbacks = "callbacks"

// CallbackArgs asks for a terminal build's callback to be delivered. The
// delivery id is fixed when the job is inserted, so every retry carries it.
type CallbackArgs struct {
	BuildID    string `json:"build_id"`
	DeliveryID string `json:"delivery_id"`
}

// Kind implements river.JobArgs.
func (CallbackArgs) Kind() string { return "kiln_callback" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (CallbackArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueCallbacks, MaxAttempts: 100}
}
