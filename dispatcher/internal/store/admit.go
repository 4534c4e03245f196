package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Admission is a waiting build an admission round chose to launch.
type Admission struct {
	ID         string
	ProjectID  string
	RiverJobID int64 // its dispatch job, to wake; 0 if it has none
}

// NextAdmissions chooses waiting builds (pending, no reservation) for the
// free launch slots — maxInFlight less the builds in flight (running or
// reserved, all projects) — in the order that keeps admission fair.
// Call it under LaunchLockKey. Only builds of ready projects are chosen, and
// of each project only as many as its limit leaves room for, oldest first
// (FIFO within a project). A project's builds after one that must wait
// anyway are not chosen either: a follow-up continuing an agent session
// another build holds (or an older waiting one will), and a build whose Job
// the namespace's quota refused (its own dispatch job retries it; self, the
// build whose dispatch job is asking, is exempt).
//
// The order across projects is fair share, then round-robin: first the
// builds that would leave their project with the fewest builds in flight
// (a project's first waiting build before anyone's second), then, among
// those, the project admitted least recently (never first), then the
// oldest build. So a project with thousands queued gets one slot per round
// like any other, and a project's first build waits at most one round.
func NextAdmissions(ctx context.Context, db DB, maxInFlight int, self string) ([]Admission, error) {
	// A round reads, of each ready project, only its oldest waiting builds,
	// as many as the free slots (no round can take more of one project),
	// through builds_project_status_id; the builds in flight through
	// builds_active and builds_reserved, their parents by key. Its cost
	// follows projects and free slots, not the backlog or the history.
	rows, err := db.Query(ctx, nextAdmissionsQuery, maxInFlight, self)
	if err != nil {
		return nil, fmt.Errorf("choosing builds to admit: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Admission, error) {
		var a Admission
		err := r.Scan(&a.ID, &a.ProjectID, &a.RiverJobID)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("choosing builds to admit: %w", err)
	}
	return out, nil
}

// Admit reserves launch slots for the chosen builds, in order (jobName
// names each one's Job), numbering each admission (builds.admitted_seq)
// and recording it as its project's latest, which sends the project to the
// back of the next round's ties. Call it in the
// transaction that chose them, under LaunchLockKey.
func Admit(ctx context.Context, tx pgx.Tx, chosen []Admission, jobName func(id string) string) error {
	if len(chosen) == 0 {
		return nil
	}
	var batch pgx.Batch
	for _, a := range chosen {
		// Statements of a batch run in order, so the numbers follow the
		// round's order.
		batch.Queue(`WITH b AS (
				UPDATE builds SET job_name = $2, waiting_reason = '', admitted_seq = nextval('project_admissions'),
					reserved_at = clock_timestamp()
				WHERE id = $1 AND status = 'pending' AND job_name = '' RETURNING project_id, admitted_seq)
			UPDATE projects p SET admitted_seq = b.admitted_seq FROM b WHERE p.id = b.project_id`,
			a.ID, jobName(a.ID))
	}
	if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
		return fmt.Errorf("reserving launches of %d builds: %w", len(chosen), err)
	}
	return nil
}

// StaleReservations are the dispatch jobs of builds that hold a launch
// reservation while their job sleeps (snoozed or retrying): a round that
// reserved a build whose job was running at that moment could not wake it,
// and the job then went to sleep. Waking them again keeps a reservation
// from holding a slot for a whole snooze.
func StaleReservations(ctx context.Context, db DB) ([]int64, error) {
	rows, err := db.Query(ctx, `SELECT b.river_job_id FROM builds b JOIN river_job j ON j.id = b.river_job_id
		WHERE b.status = 'pending' AND b.job_name <> '' AND j.state IN ('scheduled', 'retryable')`)
	if err != nil {
		return nil, fmt.Errorf("finding reserved builds whose dispatch job sleeps: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// CountWaiting counts the pending builds that hold no reservation.
func CountWaiting(ctx context.Context, db DB) (int, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT count(*) FROM builds WHERE status = 'pending' AND job_name = ''`).Scan(&n)
	return n, err
}

// AnyWaiting reports whether some pending build holds no reservation: an
// admission round has something to do only then.
func AnyWaiting(ctx context.Context, db DB) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM builds WHERE status = 'pending' AND job_name = '')`).Scan(&ok)
	return ok, err
}

// nextAdmissionsQuery is NextAdmissions' query: $1 the maximum in flight,
// $2 the build asking ("" for none).
var nextAdmissionsQuery = `WITH flight AS (
			SELECT b.project_id,
				COALESCE((SELECT ps.result ->> 'session_id' FROM builds ps WHERE ps.id = b.parent_id), '') AS session
			FROM builds b
			WHERE ` + inFlight("b") + `
		), busy AS (
			SELECT project_id, count(*) AS n FROM flight GROUP BY project_id
		), free AS (
			SELECT GREATEST($1 - (SELECT count(*) FROM flight), 0) AS n
		), waiting AS (
			SELECT h.id, h.project_id, COALESCE(h.river_job_id, 0) AS river_job_id, h.waiting_reason,
				row_number() OVER (PARTITION BY h.project_id ORDER BY h.id) AS rn,
				COALESCE(ps.result ->> 'session_id', '') AS session,
				p.max_concurrent, p.admitted_seq
			FROM projects p
			CROSS JOIN LATERAL (
				SELECT b.id, b.project_id, b.river_job_id, b.waiting_reason, b.parent_id FROM builds b
				WHERE b.project_id = p.id AND b.status = 'pending' AND b.job_name = ''
				ORDER BY b.id LIMIT (SELECT n FROM free)) h
			LEFT JOIN builds ps ON ps.id = h.parent_id
			WHERE p.status = 'ready'
		), blocked AS (
			SELECT w.project_id, min(w.rn) AS rn FROM waiting w
			WHERE (w.waiting_reason = 'quota' AND w.id::text <> $2)
				OR (w.session <> '' AND (
					EXISTS (SELECT 1 FROM flight f WHERE f.session = w.session)
					OR EXISTS (SELECT 1 FROM waiting o WHERE o.session = w.session AND o.id < w.id)))
			GROUP BY w.project_id
		)
		SELECT w.id, w.project_id, w.river_job_id
		FROM waiting w
		LEFT JOIN busy f ON f.project_id = w.project_id
		LEFT JOIN blocked x ON x.project_id = w.project_id
		WHERE COALESCE(f.n, 0) + w.rn <= w.max_concurrent AND (x.rn IS NULL OR w.rn < x.rn)
		ORDER BY COALESCE(f.n, 0) + w.rn, w.admitted_seq NULLS FIRST, w.id
		LIMIT (SELECT n FROM free)`
