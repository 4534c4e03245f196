package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMonthOf(t *testing.T) {
	t.Parallel()
	plus5 := time.FixedZone("+05", 5*3600)
	for _, c := range []struct {
		at          time.Time
		start, next string
	}{
		{time.Date(2026, 12, 20, 12, 0, 0, 0, time.UTC), "2026-12-01", "2027-01-01"},
		{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "2026-12-01", "2027-01-01"},
		{time.Date(2026, 11, 30, 23, 59, 59, 999999999, time.UTC), "2026-11-01", "2026-12-01"},
		{time.Date(2026, 12, 1, 1, 0, 0, 0, plus5), "2026-11-01", "2026-12-01"}, // Nov 30, 20:00 UTC
		{time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), "2028-02-01", "2028-03-01"},
	} {
		start, next := store.MonthOf(c.at)
		assert.Equal(t, c.start, start.Format(time.DateOnly), c.at)
		assert.Equal(t, c.next, next.Format(time.DateOnly), c.at)
		assert.Equal(t, time.UTC, start.Location())
	}
}

// ProjectSpend counts the builds of the project that finished within the
// calendar month (UTC), start included and next month's first instant not,
// with a cost; every template's.
func TestProjectSpendMonthBoundaries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	p := apptest.Project(t, db.Pool, "web")
	other := apptest.Project(t, db.Pool, "api")
	add := func(project string, cost float64, finished *time.Time, template string) {
		t.Helper()
		id := uuid.Must(uuid.NewV7()).String()
		_, err := store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id, ProjectID: project,
			Spec: schema.BuildSpec{Prompt: "p", Template: template}, RequestedBy: "bot"})
		require.NoError(t, err)
		status := "completed"
		if finished == nil {
			status = "running"
		}
		_, err = db.Pool.Exec(ctx, `UPDATE builds SET status = $2, cost_usd = $3, finished_at = $4 WHERE id = $1`,
			id, status, cost, finished)
		require.NoError(t, err)
	}
	at := func(s string) *time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return &tm
	}
	add(p.ID, 1, at("2026-12-01T00:00:00Z"), "default")         // the month's first instant: in
	add(p.ID, 2, at("2026-12-31T23:59:59.999999Z"), "readonly") // its last microsecond: in, another template
	add(p.ID, 4, at("2026-12-15T10:00:00+05:00"), "default")    // in
	add(p.ID, 8, at("2026-11-30T23:59:59.999999Z"), "default")  // the month before: out
	add(p.ID, 16, at("2027-01-01T00:00:00Z"), "default")        // the next month's first instant: out
	add(p.ID, 32, at("2026-12-01T04:00:00+05:00"), "default")   // Nov 30, 23:00 UTC: out
	add(p.ID, 0, at("2026-12-10T00:00:00Z"), "default")         // no cost: not a build that reported one
	add(p.ID, 64, nil, "default")                               // not finished: out
	add(other.ID, 128, at("2026-12-10T00:00:00Z"), "default")   // another project: out

	s, err := store.ProjectSpend(ctx, db.Pool, p.ID, time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	assert.Equal(t, schema.ProjectSpend{Month: "2026-12", CostUSD: 7, Builds: 3}, s)
	s, err = store.ProjectSpend(ctx, db.Pool, p.ID, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	assert.Equal(t, schema.ProjectSpend{Month: "2026-11", CostUSD: 40, Builds: 2}, s)
	s, err = store.ProjectSpend(ctx, db.Pool, p.ID, time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	assert.Equal(t, schema.ProjectSpend{Month: "2025-01"}, s, "a month without builds")

	// The sum can read the builds_project_spend index (the planner is told
	// not to scan, since a small table is cheaper scanned).
	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `EXPLAIN SELECT COALESCE(sum(cost_usd), 0), count(*) FROM builds
			WHERE project_id = $1 AND cost_usd > 0 AND finished_at >= $2 AND finished_at < $3`,
			p.ID, time.Now(), time.Now())
		if err != nil {
			return err
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		assert.Contains(t, strings.Join(plan, "\n"), "builds_project_spend")
		return nil
	}))
}

// ListFollowups returns a build's follow-ups oldest first, and only its own.
func TestListFollowups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	p := apptest.Project(t, db.Pool, "web")
	insert := func(parent string) string {
		t.Helper()
		id := uuid.Must(uuid.NewV7()).String()
		_, err := store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id, ProjectID: p.ID,
			Spec: schema.BuildSpec{Prompt: "p"}, RequestedBy: "bot", ParentID: parent})
		require.NoError(t, err)
		return id
	}
	root := insert("")
	none, err := store.ListFollowups(ctx, db.Pool, root)
	require.NoError(t, err)
	assert.Empty(t, none)
	a := insert(root)
	other := insert("")
	b := insert(root)
	aa := insert(a)
	insert(other)
	c := insert(root)

	got, err := store.ListFollowups(ctx, db.Pool, root)
	require.NoError(t, err)
	assert.Equal(t, []string{a, b, c}, got)
	got, err = store.ListFollowups(ctx, db.Pool, a)
	require.NoError(t, err)
	assert.Equal(t, []string{aa}, got)
	build, err := store.GetBuild(ctx, db.Pool, aa)
	require.NoError(t, err)
	assert.Equal(t, a, build.ParentID)
}
