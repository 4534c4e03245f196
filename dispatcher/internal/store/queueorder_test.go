package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// TestListPendingInQueueOrder: status=pending lists oldest first, the order
// builds launch, with queue positions 1, 2, ... and a cursor that pages
// forward without a gap or a repeat; every other listing is newest first.
func TestListPendingInQueueOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	p := apptest.Project(t, db.Pool, "web")
	other := apptest.Project(t, db.Pool, "api")
	var all, pending []string // oldest first
	for i := range 7 {
		id, err := uuid.NewV7()
		require.NoError(t, err)
		project := p.ID
		if i == 3 {
			project = other.ID
		}
		_, err = store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id.String(), ProjectID: project,
			Spec: schema.BuildSpec{Prompt: "p"}, RequestedBy: "bot"})
		require.NoError(t, err)
		if project != p.ID {
			continue
		}
		all = append(all, id.String())
		if i == 1 { // left the queue
			_, err = store.TransitionBuild(ctx, db.Pool, id.String(), store.Transition{To: schema.StatusCancelled,
				Reason: schema.ReasonCancelled})
			require.NoError(t, err)
			continue
		}
		pending = append(pending, id.String())
	}

	var seen []string
	var positions []int
	after := ""
	for pages := 1; ; pages++ {
		page, more, err := store.ListBuildSummaries(ctx, db.Pool,
			store.ListBuildsParams{ProjectID: p.ID, Status: schema.StatusPending, Limit: 2, After: after})
		require.NoError(t, err)
		for _, b := range page {
			seen = append(seen, b.ID)
			positions = append(positions, b.QueuePosition)
		}
		if !more {
			break
		}
		require.Len(t, page, 2)
		after = page[len(page)-1].ID
		require.Less(t, pages, 10)
	}
	assert.Equal(t, pending, seen, "oldest first, every pending build once")
	assert.Equal(t, []int{1, 2, 3, 4, 5}, positions, "the listing's order is the queue's")

	page, more, err := store.ListBuildSummaries(ctx, db.Pool, store.ListBuildsParams{ProjectID: p.ID, Limit: 10})
	require.NoError(t, err)
	require.False(t, more)
	var newest []string
	for _, b := range page {
		newest = append(newest, b.ID)
	}
	want := append([]string(nil), all...)
	for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
		want[i], want[j] = want[j], want[i]
	}
	assert.Equal(t, want, newest, "without a status filter: newest first")
	page, _, err = store.ListBuildSummaries(ctx, db.Pool, store.ListBuildsParams{ProjectID: p.ID, Status: schema.StatusCancelled, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)
	assert.Equal(t, all[1], page[0].ID)

	_, _, err = store.ListBuildSummaries(ctx, db.Pool, store.ListBuildsParams{ProjectID: p.ID, Status: schema.StatusPending, Limit: 2, Before: pending[2]})
	assert.ErrorContains(t, err, "pending builds page on with After")
	_, _, err = store.ListBuildSummaries(ctx, db.Pool, store.ListBuildsParams{ProjectID: p.ID, Limit: 2, After: pending[2]})
	assert.ErrorContains(t, err, "only pending builds page on with After")
}

// TestQueuePositionUsesTheIndex: counting a build's place in its project's
// queue, and the pending listing, are index range scans (of
// builds_project_status_id, or builds_active for the count when the planner
// prefers it), never a scan of the table, however many builds it holds.
func TestQueuePositionUsesTheIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	p := apptest.Project(t, db.Pool, "web")
	projects := []string{p.ID}
	for i := range 19 {
		projects = append(projects, apptest.Project(t, db.Pool, fmt.Sprintf("p%d", i)).ID)
	}
	// 40,000 builds of 20 projects, a fifth of them pending.
	_, err := db.Pool.Exec(ctx, `INSERT INTO builds (id, project_id, spec, requested_by, status, finished_at)
		SELECT gen_random_uuid(), ($1::uuid[])[1 + g % 20], '{"prompt":"p"}', 'bot',
			CASE WHEN g % 50 < 10 THEN 'pending' ELSE 'completed' END,
			CASE WHEN g % 50 < 10 THEN NULL ELSE now() END
		FROM generate_series(1, 40000) g`, projects)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `ANALYZE builds`)
	require.NoError(t, err)
	var id string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT id FROM builds WHERE project_id = $1 AND status = 'pending'
		ORDER BY id DESC LIMIT 1`, p.ID).Scan(&id))
	for name, q := range map[string]string{
		"position": `SELECT count(*) FROM builds q WHERE q.project_id = $1 AND q.status = 'pending' AND q.id <= $2`,
		"listing":  `SELECT id FROM builds WHERE project_id = $1 AND status = 'pending' AND id > $2 ORDER BY id LIMIT 21`,
	} {
		plan := explain(t, db, q, p.ID, id)
		t.Logf("%s:\n%s", name, plan)
		assert.NotContains(t, plan, "Seq Scan", name)
		assert.Contains(t, plan, "Index", name)
	}
	b, err := store.GetBuild(ctx, db.Pool, id)
	require.NoError(t, err)
	var want int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM builds WHERE project_id = $1 AND status = 'pending'`, p.ID).Scan(&want))
	assert.Equal(t, want, b.QueuePosition, "the youngest of the project's pending builds is last")
}

// explain returns the planner's plan of query q with args, a line a step.
func explain(t *testing.T, db *pgtest.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `EXPLAIN `+q, args...)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}
