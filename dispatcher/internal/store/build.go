package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/schema"
)

// ErrTerminal is returned when a change is asked of a build whose status is final.
var ErrTerminal = errors.New("build is in a terminal status")

// Build is a row of the build audit trail.
type Build struct {
	schema.Build
	RiverJobID int64
}

// costOf is the SQL of a build's cost_usd once result (a jsonb parameter,
// or NULL) is stored: the result's usage.cost_usd, not below 0, or the
// cost it had when the result names none.
func costOf(result string) string {
	return `CASE WHEN jsonb_typeof(` + result + `::jsonb -> 'usage' -> 'cost_usd') = 'number'
		THEN GREATEST((` + result + `::jsonb -> 'usage' ->> 'cost_usd')::double precision, 0) ELSE cost_usd END`
}

// queuePosition is the SQL of the queue position of the build row named
// row: its place among its project's pending builds, in launch order (one
// range read of builds_project_status_id).
func queuePosition(row string) string {
	return `(SELECT count(*) FROM builds q
		WHERE q.project_id = ` + row + `.project_id AND q.status = 'pending' AND q.id <= ` + row + `.id)`
}

// buildColumns are a Build's columns; the queue position is counted only
// for a pending build.
var buildColumns = `id, project_id, spec, status, result, error, reason, attempt, job_name, requested_by,
	created_at, started_at, finished_at, COALESCE(river_job_id, 0), COALESCE(parent_id::text, ''),
	CASE WHEN status = 'pending' THEN waiting_reason ELSE '' END,
	CASE WHEN status = 'pending' THEN ` + queuePosition("builds") + ` ELSE 0 END`

func scanBuild(row interface{ Scan(...any) error }) (*Build, error) {
	var b Build
	var spec, result []byte
	err := row.Scan(&b.ID, &b.ProjectID, &spec, &b.Status, &result, &b.Error, &b.Reason, &b.Attempt, &b.JobName,
		&b.RequestedBy, &b.CreatedAt, &b.StartedAt, &b.FinishedAt, &b.RiverJobID, &b.ParentID, &b.WaitingReason, &b.QueuePosition)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(spec, &b.Spec); err != nil {
		return nil, fmt.Errorf("decoding spec of build %s: %w", b.ID, err)
	}
	if len(result) > 0 {
		b.Result = new(schema.BuildResult)
		if err := json.Unmarshal(result, b.Result); err != nil {
			return nil, fmt.Errorf("decoding result of build %s: %w", b.ID, err)
		}
	}
	return &b, nil
}

// NewBuild is what InsertBuild writes.
type NewBuild struct {
	ID          string
	ProjectID   string
	Spec        schema.BuildSpec
	RequestedBy string
	RiverJobID  int64
	ParentID    string // the build a follow-up continues; empty otherwise
}

// InsertBuild writes a pending build and its first status event.
func InsertBuild(ctx context.Context, db DB, nb NewBuild) (time.Time, error) {
	spec, err := json.Marshal(nb.Spec)
	if err != nil {
		return time.Time{}, err
	}
	var created time.Time
	err = db.QueryRow(ctx, `WITH b AS (
			INSERT INTO builds (id, project_id, spec, requested_by, river_job_id, event_seq, parent_id)
			VALUES ($1, $2, $3, $4, NULLIF($5, 0), 1, $6::uuid) RETURNING id, created_at)
		INSERT INTO build_events (build_id, seq, type, payload, created_at)
		SELECT id, 1, 'status', '{"status":"pending"}', created_at FROM b RETURNING created_at`,
		nb.ID, nb.ProjectID, spec, nb.RequestedBy, nb.RiverJobID, nullIfEmpty(nb.ParentID)).Scan(&created)
	if isForeignKeyViolation(err) {
		return time.Time{}, fmt.Errorf("project %s: %w", nb.ProjectID, ErrNotFound)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("inserting build %s: %w", nb.ID, err)
	}
	return created, nil
}

// GetBuild returns the build with id.
func GetBuild(ctx context.Context, db DB, id string) (*Build, error) {
	b, err := scanBuild(db.QueryRow(ctx, `SELECT `+buildColumns+` FROM builds WHERE id = $1`, id))
	return b, notFound(err, "build "+id)
}

// ListBuildsParams filters and pages ListBuildSummaries.
type ListBuildsParams struct {
	ProjectID string
	Status    schema.Status // empty: any
	// The cursor: the last build id of the previous page. A listing of
	// pending builds is in queue order, oldest first (the order they
	// launch), and pages on with After; every other listing is newest
	// first and pages on with Before. Giving the other one is an error.
	Before string // list builds created before it
	After  string // status pending: list builds created after it
	Limit  int    // the most summaries a page holds
	// MaxBytes bounds a page's summaries encoded as JSON: the page ends before
	// the summary that would pass it (a page holds at least one). 0: no bound.
	MaxBytes int
}

// summaryColumns are what a BuildSummary needs of a build row. The spec and
// the result are read once each (jsonb_to_record) and only the named fields
// leave the database: never the prompt, the variables or the output.
var summaryColumns = `b.id, b.project_id, b.status, b.reason,
	CASE WHEN length(b.error) > $5 THEN left(b.error, $5 - 1) || '…' ELSE b.error END,
	COALESCE(s.template, ''), COALESCE(s.auto_commit, false), COALESCE(s.auto_push, false),
	COALESCE(s.callback_url, '') <> '', b.attempt, b.requested_by, b.created_at, b.started_at, b.finished_at,
	b.result IS NOT NULL, COALESCE(r.success, false), COALESCE(r.commit_sha, ''),
	CASE WHEN jsonb_typeof(r.files_changed) = 'array' THEN jsonb_array_length(r.files_changed) ELSE 0 END,
	CASE WHEN jsonb_typeof(r.artifacts) = 'array' THEN jsonb_array_length(r.artifacts) ELSE 0 END,
	COALESCE(r.duration_ms, 0), COALESCE(b.parent_id::text, ''),
	CASE WHEN b.status = 'pending' THEN b.waiting_reason ELSE '' END,
	CASE WHEN b.status = 'pending' THEN ` + queuePosition("b") + ` ELSE 0 END,
	b.cost_usd`

// QueueOrder reports whether a listing of builds in status is in queue
// order (oldest first, paged with ListBuildsParams.After): only pending's is.
func QueueOrder(status schema.Status) bool { return status == schema.StatusPending }

// ListBuildSummaries returns a page of a project's builds as summaries:
// newest first, or for status pending in queue order (QueueOrder); at most
// p.Limit of them and at most p.MaxBytes of JSON. more reports whether
// builds follow the page (its last id is the next cursor).
func ListBuildSummaries(ctx context.Context, db DB, p ListBuildsParams) (page []schema.BuildSummary, more bool, err error) {
	if p.Limit < 1 {
		return nil, false, fmt.Errorf("listing builds: limit %d is not positive", p.Limit)
	}
	// Both orders walk builds_project_status_id (project_id, status, id
	// DESC), forward or backward, when a status is given.
	past, order, cursor := `b.id < $3::uuid`, `b.id DESC`, p.Before
	if QueueOrder(p.Status) {
		past, order, cursor = `b.id > $3::uuid`, `b.id`, p.After
		if p.Before != "" {
			return nil, false, errors.New("listing builds: pending builds page on with After, not Before")
		}
	} else if p.After != "" {
		return nil, false, errors.New("listing builds: only pending builds page on with After")
	}
	rows, err := db.Query(ctx, `SELECT `+summaryColumns+` FROM builds b
		CROSS JOIN LATERAL jsonb_to_record(b.spec) AS s(template text, auto_commit boolean, auto_push boolean, callback_url text)
		LEFT JOIN LATERAL jsonb_to_record(b.result) AS r(success boolean, commit_sha text, files_changed jsonb,
			artifacts jsonb, duration_ms bigint) ON true
		WHERE b.project_id = $1
		  AND ($2 = '' OR b.status = $2)
		  AND ($3::uuid IS NULL OR `+past+`)
		ORDER BY `+order+` LIMIT $4`,
		p.ProjectID, string(p.Status), nullIfEmpty(cursor), p.Limit+1, schema.SummaryErrorChars)
	if err != nil {
		return nil, false, fmt.Errorf("listing builds: %w", err)
	}
	defer rows.Close()
	page = []schema.BuildSummary{}
	size := 0
	for rows.Next() {
		var b schema.BuildSummary
		var r schema.ResultSummary
		var hasResult bool
		if err := rows.Scan(&b.ID, &b.ProjectID, &b.Status, &b.Reason, &b.Error, &b.Template, &b.AutoCommit, &b.AutoPush,
			&b.HasCallback, &b.Attempt, &b.RequestedBy, &b.CreatedAt, &b.StartedAt, &b.FinishedAt,
			&hasResult, &r.Success, &r.CommitSHA, &r.FilesChangedCount, &r.ArtifactCount, &r.DurationMS,
			&b.ParentID, &b.WaitingReason, &b.QueuePosition, &b.CostUSD); err != nil {
			return nil, false, fmt.Errorf("listing builds: %w", err)
		}
		b.Template = cmp.Or(b.Template, schema.DefaultTemplate)
		if hasResult {
			b.Result = &r
		}
		if len(page) == p.Limit {
			return page, true, nil
		}
		if p.MaxBytes > 0 {
			j, err := json.Marshal(b)
			if err != nil {
				return nil, false, err
			}
			if size += len(j) + 1; size > p.MaxBytes && len(page) > 0 {
				return page, true, nil
			}
		}
		page = append(page, b)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("listing builds: %w", err)
	}
	return page, false, nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Transition is a change of a build's status.
type Transition struct {
	To      schema.Status
	Reason  schema.Reason       // why a build fails or is cancelled; required for those, empty otherwise
	Error   string              // failure or cancel text, for people
	Result  *schema.BuildResult // the runner's result, if any
	JobName string              // set when the build starts running
	From    []schema.Status     // allowed current statuses; default: every non-terminal one
}

// TransitionBuild moves a build to t.To if its status is one of t.From, and
// records a status event in the same statement. A build already terminal (or
// not in t.From) returns ErrTerminal and is left as it is: docs/design.md,
// invariant 4.
func TransitionBuild(ctx context.Context, db DB, id string, t Transition) (*Build, error) {
	from := t.From
	if from == nil {
		from = []schema.Status{schema.StatusPending, schema.StatusRunning}
	}
	var result []byte
	if t.Result != nil {
		var err error
		if result, err = json.Marshal(t.Result); err != nil {
			return nil, err
		}
	}
	if (t.To == schema.StatusFailed || t.To == schema.StatusCancelled) != (t.Reason != schema.ReasonNone) || !t.Reason.Valid() {
		// A programmer error: lifecycle always gives failures a reason.
		return nil, fmt.Errorf("moving build %s to %s: reason %q does not fit", id, t.To, t.Reason)
	}
	payload, _ := json.Marshal(schema.StatusPayload{Status: t.To, Error: t.Error, Reason: t.Reason})
	terminal := t.To.Terminal()
	row := db.QueryRow(ctx, `WITH u AS (
			UPDATE builds SET status = $2,
				error = CASE WHEN $3 = '' THEN error ELSE $3 END,
				reason = $9,
				result = COALESCE($4::jsonb, result),
				cost_usd = `+costOf("$4")+`,
				job_name = CASE WHEN $5 = '' THEN job_name ELSE $5 END,
				started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, now()) ELSE started_at END,
				finished_at = CASE WHEN $6 THEN now() ELSE NULL END,
				attempt = attempt + CASE WHEN $2 = 'running' THEN 1 ELSE 0 END,
				event_seq = event_seq + 1
			WHERE id = $1 AND status = ANY($7)
			RETURNING *),
		e AS (INSERT INTO build_events (build_id, seq, type, payload)
			SELECT id, event_seq, 'status', $8 FROM u)
		SELECT `+buildColumns+` FROM u AS builds`,
		id, string(t.To), t.Error, result, t.JobName, terminal, statusStrings(from), payload, string(t.Reason))
	b, err := scanBuild(row)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, gerr := GetBuild(ctx, db, id); gerr != nil {
			return nil, gerr
		}
		return nil, fmt.Errorf("build %s: %w", id, ErrTerminal)
	}
	if err != nil {
		return nil, fmt.Errorf("moving build %s to %s: %w", id, t.To, err)
	}
	return b, nil
}

func statusStrings(ss []schema.Status) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

// InsertBuilds writes many pending builds and their first status events in
// one statement (group commit of concurrent submissions). It returns their
// creation times in the order given. An unknown project fails the whole call.
func InsertBuilds(ctx context.Context, db DB, nbs []NewBuild) ([]time.Time, error) {
	ids := make([]string, len(nbs))
	projects := make([]string, len(nbs))
	specs := make([]string, len(nbs))
	who := make([]string, len(nbs))
	jobs := make([]int64, len(nbs))
	parents := make([]string, len(nbs))
	for i, nb := range nbs {
		parents[i] = nb.ParentID
		spec, err := json.Marshal(nb.Spec)
		if err != nil {
			return nil, err
		}
		ids[i], projects[i], specs[i], who[i], jobs[i] = nb.ID, nb.ProjectID, string(spec), nb.RequestedBy, nb.RiverJobID
	}
	rows, err := db.Query(ctx, `WITH b AS (
			INSERT INTO builds (id, project_id, spec, requested_by, river_job_id, event_seq, parent_id)
			SELECT id, project_id, spec::jsonb, requested_by, NULLIF(river_job_id, 0), 1, NULLIF(parent_id, '')::uuid
			FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[])
				AS t(id, project_id, spec, requested_by, river_job_id, parent_id)
			RETURNING id, created_at)
		INSERT INTO build_events (build_id, seq, type, payload, created_at)
		SELECT id, 1, 'status', '{"status":"pending"}', created_at FROM b RETURNING build_id::text, created_at`,
		ids, projects, specs, who, jobs, parents)
	if err != nil {
		return nil, fmt.Errorf("inserting %d builds: %w", len(nbs), err)
	}
	created := map[string]time.Time{}
	for rows.Next() {
		var id string
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			rows.Close()
			return nil, err
		}
		created[id] = at
	}
	if err := rows.Err(); err != nil {
		if isForeignKeyViolation(err) {
			return nil, fmt.Errorf("a project of the batch: %w", ErrNotFound)
		}
		return nil, fmt.Errorf("inserting %d builds: %w", len(nbs), err)
	}
	out := make([]time.Time, len(nbs))
	for i, id := range ids {
		out[i] = created[id]
	}
	return out, nil
}
