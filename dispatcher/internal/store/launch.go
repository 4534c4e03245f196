package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/schema"
)

// LaunchLockKey serializes launch decisions across dispatcher replicas.
const LaunchLockKey int64 = 0x6b696c6e01

// Capacity is what a launch decision looks at.
type Capacity struct {
	InFlight        int  // running builds plus pending ones holding a reservation, all projects
	ProjectInFlight int  // the same, for the build's project
	OlderPending    bool // an older pending build of the project holds no reservation yet (FIFO)
	MaxConcurrent   int  // the project's limit
	// SessionBusy: the build is a follow-up and another build of the
	// project in flight continues the same agent session (two resumes of
	// one session at once would interleave it).
	SessionBusy bool
}

// LockLaunches takes the transaction-scoped lock that serializes launch
// decisions across replicas; it is released when tx ends.
func LockLaunches(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, LaunchLockKey)
	return err
}

// Reservation is what a launch decision reads of the build asking.
type Reservation struct {
	Status        schema.Status
	JobName       string // set: a round, or an earlier attempt, reserved it
	WaitingReason schema.WaitingReason
}

// LockLaunchesFor takes the launch lock (LockLaunches) and reads build id's
// reservation, pipelined in one round trip. The read is a statement of its
// own after the lock's, so its snapshot holds every reservation committed
// before the lock was granted.
func LockLaunchesFor(ctx context.Context, tx pgx.Tx, id string) (Reservation, error) {
	var batch pgx.Batch
	batch.Queue(`SELECT pg_advisory_xact_lock($1)`, LaunchLockKey)
	var r Reservation
	batch.Queue(`SELECT status, job_name, waiting_reason FROM builds WHERE id = $1`, id).QueryRow(func(row pgx.Row) error {
		return notFound(row.Scan(&r.Status, &r.JobName, &r.WaitingReason), "build "+id)
	})
	err := tx.SendBatch(ctx, &batch).Close()
	return r, err
}

// inFlight is the condition of a build (row: the builds table's name or
// alias) that holds a launch slot: running, or pending with a reservation
// (its Job name is recorded).
func inFlight(row string) string {
	return `(` + row + `.status = 'running' OR (` + row + `.status = 'pending' AND ` + row + `.job_name <> ''))`
}

// LaunchCapacity reads capacity for a build; call it under LaunchLockKey
// for figures a decision can use.
func LaunchCapacity(ctx context.Context, db DB, b *Build) (Capacity, error) {
	var c Capacity
	err := db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM builds WHERE `+inFlight("builds")+`),
		(SELECT count(*) FROM builds WHERE project_id = $1 AND `+inFlight("builds")+`),
		EXISTS (SELECT 1 FROM builds WHERE project_id = $1 AND status = 'pending' AND job_name = '' AND id < $2),
		(SELECT max_concurrent FROM projects WHERE id = $1),
		COALESCE((SELECT EXISTS (SELECT 1 FROM builds o JOIN builds op ON op.id = o.parent_id
				WHERE o.project_id = $1 AND o.id <> $2
				  AND `+inFlight("o")+`
				  AND op.result ->> 'session_id' = p.result ->> 'session_id')
			FROM builds me JOIN builds p ON p.id = me.parent_id
			WHERE me.id = $2 AND p.result ->> 'session_id' <> ''), false)`, b.ProjectID, b.ID).
		Scan(&c.InFlight, &c.ProjectInFlight, &c.OlderPending, &c.MaxConcurrent, &c.SessionBusy)
	return c, err
}

// Unreserve gives a pending build's reservation back (e.g. the quota refused
// its Job) and puts back the waiting reason it had before (Admit cleared
// it), so that the next SetWaiting sees a change only if the reason did
// change.
func Unreserve(ctx context.Context, db DB, id string, was schema.WaitingReason) error {
	_, err := db.Exec(ctx, `UPDATE builds SET job_name = '', waiting_reason = $2, reserved_at = NULL WHERE id = $1 AND status = 'pending'`, id, string(was))
	if err != nil {
		return fmt.Errorf("giving back the reservation of build %s: %w", id, err)
	}
	return nil
}

// SetRunnerTokenHash stores the hash of a build's runner token.
func SetRunnerTokenHash(ctx context.Context, db DB, id string, hash []byte) error {
	_, err := db.Exec(ctx, `UPDATE builds SET runner_token_hash = $2 WHERE id = $1`, id, hash)
	return err
}

// SetWaiting records why a pending build waits. It reports whether the
// reason changed (false when the build had it already, or is no longer
// pending) and, when it did, the build's queue position (as Build.QueuePosition).
func SetWaiting(ctx context.Context, db DB, id string, reason schema.WaitingReason) (changed bool, position int, err error) {
	err = db.QueryRow(ctx, `UPDATE builds SET waiting_reason = $2
		WHERE id = $1 AND status = 'pending' AND waiting_reason <> $2
		RETURNING `+queuePosition("builds"),
		id, string(reason)).Scan(&position)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("recording why build %s waits: %w", id, err)
	}
	return true, position, nil
}

// BatchResult is what AppendBatch did.
type BatchResult struct {
	Stored    int
	Duplicate bool
	Status    schema.Status // the build's status when the batch was taken
}

// AppendBatch stores a runner's event batch once: a batch number seen before
// stores nothing and returns Duplicate. Call it in a transaction: it locks
// the build's row, so the batch is stored before any later status change.
// A terminal build is an *EndedError (ErrTerminal); a batch that would take
// the build past caps is a *CapError; either way the transaction must be
// rolled back, and then nothing of the batch is stored. Payloads are stored
// as given (the runner protocol has checked them); their bytes count
// against caps.MaxBytes.
func AppendBatch(ctx context.Context, db DB, buildID string, batch int64, events []schema.EventInput, caps EventCaps) (BatchResult, error) {
	c, err := lockActiveBuild(ctx, db, buildID)
	if err != nil {
		return BatchResult{Status: c.status}, err
	}
	res := BatchResult{Status: c.status}
	tag, err := db.Exec(ctx, `INSERT INTO runner_batches (build_id, batch, events) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		buildID, batch, len(events))
	if err != nil {
		return res, notFound(err, "build "+buildID)
	}
	if tag.RowsAffected() == 0 {
		res.Duplicate = true
		return res, nil
	}
	if len(events) == 0 {
		return res, nil
	}
	types := make([]string, len(events))
	payloads := make([]string, len(events))
	var size int64
	for i, e := range events {
		types[i] = string(e.Type)
		p := e.Payload
		if len(p) == 0 || !json.Valid(p) {
			p = json.RawMessage(`{}`)
		}
		payloads[i] = string(p)
		size += int64(len(p))
	}
	n := int64(len(events))
	if caps.MaxEvents > 0 && c.events+n > caps.MaxEvents {
		return res, &CapError{Cap: CapEvents, Limit: caps.MaxEvents, Have: c.events, Add: n}
	}
	if caps.MaxBytes > 0 && c.eventBytes+size > caps.MaxBytes {
		return res, &CapError{Cap: CapEventBytes, Limit: caps.MaxBytes, Have: c.eventBytes, Add: size}
	}
	_, err = db.Exec(ctx, `WITH u AS (
			UPDATE builds SET event_seq = event_seq + $2, runner_events = runner_events + $2,
				runner_event_bytes = runner_event_bytes + $5
			WHERE id = $1 RETURNING event_seq - $2 AS base)
		INSERT INTO build_events (build_id, seq, type, payload)
		SELECT $1, u.base + e.ord, e.type, e.payload::jsonb
		FROM u, unnest($3::text[], $4::text[]) WITH ORDINALITY AS e(type, payload, ord)`,
		buildID, len(events), types, payloads, size)
	if err != nil {
		return res, fmt.Errorf("storing events of build %s: %w", buildID, err)
	}
	res.Stored = len(events)
	return res, nil
}

// ActiveBuilds lists running builds and pending builds holding a reservation.
func ActiveBuilds(ctx context.Context, db DB) ([]*Build, error) {
	rows, err := db.Query(ctx, `SELECT `+buildColumns+` FROM builds
		WHERE `+inFlight("builds")+` ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Build
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}
