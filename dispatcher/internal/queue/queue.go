package queue

import (
	"cmp"
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
	db       store.DB
	launcher Launcher
}

// NewDispatchWorker returns the worker of DispatchArgs: it reads the build
// from db and hands a pending one to launcher (nil: builds stay pending and
// their jobs wait, as in a dispatcher without a cluster).
func NewDispatchWorker(db store.DB, launcher Launcher) *DispatchWorker {
	if db == nil {
		panic("queue: NewDispatchWorker needs a database")
	}
	return &DispatchWorker{db: db, launcher: launcher}
}

// Work implements river.Worker.
func (w *DispatchWorker) Work(ctx context.Context, job *river.Job[DispatchArgs]) error {
	b, err := store.GetBuild(ctx, w.db, job.Args.BuildID)
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
	if w.launcher == nil {
		return river.JobSnooze(time.Minute)
	}
	return w.launcher.Launch(ctx, b)
}

// Options configures NewClient.
type Options struct {
	Schema string       // Postgres schema of River's tables; default: search_path
	Logger *slog.Logger // default: discard
	// Workers are the job workers this client runs (NewDispatchWorker's and
	// the others); nil builds an insert-only client, which inserts and
	// cancels jobs but runs none.
	Workers *river.Workers
	// DispatchWorkers is how many dispatch jobs run at once; default 10.
	DispatchWorkers int
	Queues          map[string]river.QueueConfig // queues besides QueueDispatch
	PollOnly        bool                         // no LISTEN/NOTIFY (for poolers that cannot hold it)
	JobTimeout      time.Duration                // default 20s
	Periodic        []*river.PeriodicJob
	// RescueStuckJobsAfter: how soon a job whose worker died (kill -9) runs
	// again; default 30s. Every Kiln job is short (a launch is a few API
	// calls, a callback attempt is bounded by its timeout), so JobTimeout is
	// 20s and a job still "running" after 30s was lost with its process.
	RescueStuckJobsAfter time.Duration
}

// NewClient returns a River client on pool: one that works the queues when
// o.Workers is set, an insert-only one otherwise.
func NewClient(pool *pgxpool.Pool, o Options) (*river.Client[pgx.Tx], error) {
	logger := cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	cfg := &river.Config{
		Schema:               o.Schema,
		Logger:               logger.With("component", "river"),
		JobTimeout:           cmp.Or(o.JobTimeout, 20*time.Second),
		PollOnly:             o.PollOnly,
		RescueStuckJobsAfter: cmp.Or(o.RescueStuckJobsAfter, 30*time.Second),
		// Inserts notify the queue at most once per interval; jobs inserted
		// in between wait for the next fetch. Short intervals keep the
		// submit → Job latency low at the cost of a few cheap queries.
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 250 * time.Millisecond,
	}
	if o.Workers != nil {
		cfg.Workers = o.Workers
		cfg.PeriodicJobs = o.Periodic
		cfg.Queues = map[string]river.QueueConfig{QueueDispatch: {MaxWorkers: cmp.Or(o.DispatchWorkers, 10),
			// An insert notifies at most once per FetchCooldown, so a build
			// inserted just after another's notification can miss the fetch
			// it triggered and wait for the poll: poll the dispatch queue
			// often enough that this costs tens of milliseconds, not hundreds.
			FetchPollInterval: DispatchPollInterval,
			// A build inserted within the cooldown of the last fetch waits for
			// the next: at 20 builds/s the client-wide 20ms showed as the
			// p99 of submit → fetch (bench-dispatch). A fetch is one indexed
			// query, and notifications trigger it only when builds arrive.
			FetchCooldown: DispatchFetchCooldown}}
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

// DispatchFetchCooldown is the least time between two fetches of the
// dispatch queue: how long a build that arrives just after one may wait.
const DispatchFetchCooldown = 2 * time.Millisecond

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
