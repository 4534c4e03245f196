package store_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

// backlog fills db with 100 ready projects (max_concurrent 50), waiting
// pending builds (two fifths on the first project, the rest round-robin),
// 40 running builds and history completed ones, and returns the projects.
func backlog(tb testing.TB, db *pgtest.DB, waiting, history int) []string {
	ctx := context.Background()
	var projects []string
	for i := range 100 {
		projects = append(projects, apptest.Project(tb, db.Pool, fmt.Sprintf("p%d", i)).ID)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`UPDATE projects SET max_concurrent = 50`, nil},
		{`INSERT INTO builds (id, project_id, spec, requested_by, status)
			SELECT gen_random_uuid(), CASE WHEN g <= $2 * 2 / 5 THEN ($1::uuid[])[1] ELSE ($1::uuid[])[1 + g % 100] END,
				'{"prompt":"p"}', 'bot', 'pending'
			FROM generate_series(1, $2) g`, []any{projects, waiting}},
		{`INSERT INTO builds (id, project_id, spec, requested_by, status, job_name)
			SELECT gen_random_uuid(), ($1::uuid[])[1 + g % 100], '{"prompt":"p"}', 'bot', 'running', 'j' || g
			FROM generate_series(1, 40) g`, []any{projects}},
		{`INSERT INTO builds (id, project_id, spec, requested_by, status, job_name, finished_at)
			SELECT gen_random_uuid(), ($1::uuid[])[1 + g % 100], '{"prompt":"p"}', 'bot', 'completed', 'j' || g, now()
			FROM generate_series(1, $2) g`, []any{projects, history}},
		{`ANALYZE builds`, nil},
	} {
		_, err := db.Pool.Exec(ctx, q.sql, q.args...)
		require.NoError(tb, err)
	}
	return projects
}

// TestNextAdmissionsReadsNoBacklog: an admission round's query reads the
// builds table through its indexes only — never a scan of the whole table,
// which holds the backlog and every build's history — and chooses the free
// slots' worth.
func TestNextAdmissionsReadsNoBacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	backlog(t, db, 5000, 20000)
	plan := explain(t, db, store.NextAdmissionsQuery, 50, "")
	t.Logf("plan:\n%s", plan)
	assert.NotContains(t, plan, "Seq Scan on builds", "a scan of every build")
	got, err := store.NextAdmissions(ctx, db.Pool, 50, "")
	require.NoError(t, err)
	assert.Len(t, got, 10, "50 in flight at most, 40 running: 10 free slots")
}

// BenchmarkNextAdmissions: one admission round's query with 2,000 and
// 20,000 builds waiting across 100 projects (beside 20,000 finished), 40 in
// flight and 10 free slots; x_2000 is each against the round at 2,000 in
// the same run, and SELECT 1 gives the round trip. Target: a round's cost
// does not grow with the backlog (20,000 within 1.5× of 2,000).
func BenchmarkNextAdmissions(b *testing.B) {
	ctx := context.Background()
	ns := map[string]float64{}
	for _, waiting := range []int{2000, 20000} {
		name := fmt.Sprintf("waiting=%d", waiting)
		b.Run(name, func(b *testing.B) {
			db := pgtest.New(b)
			backlog(b, db, waiting, 20000)
			start := time.Now()
			for b.Loop() {
				got, err := store.NextAdmissions(ctx, db.Pool, 50, "")
				if err != nil || len(got) != 10 {
					b.Fatalf("NextAdmissions = %d builds, %v; want 10", len(got), err)
				}
			}
			ns[name] = float64(time.Since(start).Nanoseconds()) / float64(b.N)
			if base := ns["waiting=2000"]; base > 0 {
				b.ReportMetric(ns[name]/base, "x_2000")
			}
		})
	}
	b.Run("select1", func(b *testing.B) {
		db := pgtest.New(b)
		for b.Loop() {
			var one int
			if err := db.Pool.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
				b.Fatal(err)
			}
		}
	})
	if base := ns["waiting=2000"]; base > 0 {
		r := ns["waiting=20000"] / base
		benchproc.Target(os.Stdout, "admission round at 20,000 waiting builds vs at 2,000 (100 projects, 10 free slots)",
			fmt.Sprintf("%.2f (%.2f ms vs %.2f ms)", r, ns["waiting=20000"]/1e6, base/1e6), "≤ 1.5", r <= 1.5)
	}
}
