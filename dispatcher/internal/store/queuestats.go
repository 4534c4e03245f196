package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// QueueStats is one consistent read of River's job table and of the builds
// in flight, for metrics.
type QueueStats struct {
	Jobs   []QueueJobs      // River jobs by queue and state; only the pairs that have any
	Oldest []QueueOldest    // the oldest available job of each queue asked for or seen that has one
	Builds []BuildsInFlight // pending and running builds by status and template
}

// QueueJobs counts a queue's River jobs in one state.
type QueueJobs struct {
	Queue, State string
	N            int64
}

// QueueOldest is how long a queue's oldest available job has waited.
type QueueOldest struct {
	Queue      string
	AgeSeconds float64 // may be negative for a job scheduled in the future
}

// BuildsInFlight counts the pending or running builds of one template.
type BuildsInFlight struct {
	Status   string
	Template string // the spec's; "" when unset
	N        int64
	// OldestSeconds is the age of the oldest: since acceptance for pending,
	// since start for running.
	OldestSeconds float64
}

// ReadQueueStats reads the figures in one read-only transaction, so they
// agree with each other. riverSchema is the schema of River's tables (empty:
// the search_path); the oldest available job is read for each of queues and
// for every other queue that has jobs.
func ReadQueueStats(ctx context.Context, pool *pgxpool.Pool, riverSchema string, queues []string) (*QueueStats, error) {
	riverJob := "river_job"
	if riverSchema != "" {
		riverJob = pgx.Identifier{riverSchema, "river_job"}.Sanitize()
	}
	s := &QueueStats{}
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// Grouping on the enum and casting the few groups is cheaper than
		// casting every row.
		rows, err := tx.Query(ctx, `SELECT queue, state::text, n
			FROM (SELECT queue, state, count(*) AS n FROM `+riverJob+` GROUP BY 1, 2) g`)
		if err != nil {
			return fmt.Errorf("counting river jobs: %w", err)
		}
		var j QueueJobs
		queues = slices.Clone(queues)
		if _, err := pgx.ForEachRow(rows, []any{&j.Queue, &j.State, &j.N}, func() error {
			s.Jobs = append(s.Jobs, j)
			if !slices.Contains(queues, j.Queue) {
				queues = append(queues, j.Queue)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("counting river jobs: %w", err)
		}
		// One index probe per queue and priority on River's (state, queue,
		// priority, scheduled_at, id) fetching index, however long the queue.
		rows, err = tx.Query(ctx, `SELECT q.queue, EXTRACT(EPOCH FROM now() - min(o.scheduled_at))::float8
			FROM unnest($1::text[]) AS q(queue)
			CROSS JOIN generate_series(1, 4) AS p(priority)
			CROSS JOIN LATERAL (SELECT scheduled_at FROM `+riverJob+`
				WHERE state = 'available' AND queue = q.queue AND priority = p.priority
				ORDER BY scheduled_at LIMIT 1) o
			GROUP BY 1`, queues)
		if err != nil {
			return fmt.Errorf("reading oldest river jobs: %w", err)
		}
		var o QueueOldest
		if _, err := pgx.ForEachRow(rows, []any{&o.Queue, &o.AgeSeconds}, func() error {
			s.Oldest = append(s.Oldest, o)
			return nil
		}); err != nil {
			return fmt.Errorf("reading oldest river jobs: %w", err)
		}
		// Served by the builds_active partial index.
		rows, err = tx.Query(ctx, `SELECT status, COALESCE(spec->>'template', ''), count(*),
				EXTRACT(EPOCH FROM now() - min(CASE WHEN status = 'running' THEN COALESCE(started_at, created_at) ELSE created_at END))::float8
			FROM builds WHERE status IN ('pending', 'running') GROUP BY 1, 2`)
		if err != nil {
			return fmt.Errorf("counting builds in flight: %w", err)
		}
		var b BuildsInFlight
		if _, err := pgx.ForEachRow(rows, []any{&b.Status, &b.Template, &b.N, &b.OldestSeconds}, func() error {
			s.Builds = append(s.Builds, b)
			return nil
		}); err != nil {
			return fmt.Errorf("counting builds in flight: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}
