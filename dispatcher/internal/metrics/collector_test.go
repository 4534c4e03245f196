package metrics

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

// fillRiver inserts n River jobs: per ten, 6 completed, 1 available (an
// hour old), 1 scheduled, 1 retryable and 1 running; every fourth on the
// callbacks queue, the rest on dispatch.
func fillRiver(t testing.TB, db *pgtest.DB, n int) {
	t.Helper()
	_, err := db.Pool.Exec(context.Background(), `
		INSERT INTO river_job (kind, max_attempts, queue, state, args, scheduled_at, attempted_at, finalized_at)
		SELECT 'kiln_dispatch', 25, CASE WHEN i % 4 = 0 THEN 'callbacks' ELSE 'dispatch' END, s.state::river_job_state,
			jsonb_build_object('build_id', gen_random_uuid(), 'project_id', gen_random_uuid()),
			CASE WHEN s.state = 'scheduled' THEN now() + interval '1 hour' ELSE now() - interval '1 hour' END,
			CASE WHEN s.state IN ('running', 'completed', 'retryable') THEN now() END,
			CASE WHEN s.state = 'completed' THEN now() END
		FROM generate_series(1, $1) i,
			LATERAL (SELECT (ARRAY['completed','completed','completed','completed','completed','completed',
				'available','scheduled','retryable','running'])[1 + i % 10] AS state) s`, n)
	require.NoError(t, err)
	_, err = db.Pool.Exec(context.Background(), `ANALYZE river_job`)
	require.NoError(t, err)
}

// The queue figures are right with 100k River jobs, a refresh is one short
// round of queries, and scrapes within the TTL reuse it.
func TestQueueStats100k(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	const n = 100_000
	fillRiver(t, db, n)
	c := newDBCollector(db.Pool, db.Schema, 5*time.Second, 10*time.Second, func(s string) string { return s }, nil, discard())
	now := time.Now()
	c.now = func() time.Time { return now }
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))

	start := time.Now()
	count, err := testutil.GatherAndCount(reg, "kiln_queue_jobs")
	refresh := time.Since(start)
	require.NoError(t, err)
	assert.Equal(t, 2*len(riverStates), count, "every state of both queues")
	assert.Equal(t, 1, c.queries)

	total := 0.0
	for k, v := range c.stats.jobs {
		total += v
		if k == [2]string{"dispatch", "available"} {
			assert.Equal(t, 5000.0, v) // i ≡ 6 (mod 10) is even: half of those are on callbacks
		}
	}
	assert.Equal(t, float64(n), total)
	assert.InDelta(t, 3600, c.stats.oldest["dispatch"], 60)
	assert.InDelta(t, 3600, c.stats.oldest["callbacks"], 60)

	// Within the TTL: no query.
	start = time.Now()
	const cached = 100
	for range cached {
		_, err := reg.Gather()
		require.NoError(t, err)
	}
	perCached := time.Since(start) / cached
	assert.Equal(t, 1, c.queries)
	now = now.Add(5 * time.Second)
	_, err = reg.Gather()
	require.NoError(t, err)
	assert.Equal(t, 2, c.queries, "refreshed once the TTL passed")
	t.Logf("100k river_job rows: refresh (4 queries) %v, cached scrape %v, last refresh query %v", refresh, perCached, c.took)
}

// A failing refresh keeps serving the previous figures and counts the error.
func TestQueueStatsError(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	c := newDBCollector(db.Pool, db.Schema, time.Nanosecond, 10*time.Second, func(s string) string { return s }, nil, discard())
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	_, err := reg.Gather()
	require.NoError(t, err)
	c.riverSchema = "no_such_schema"
	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			names[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	assert.Equal(t, 1.0, names["kiln_queue_stats_errors_total"])
	assert.Contains(t, names, "kiln_queue_jobs")
}

// BenchmarkQueueStats measures a refresh of the database figures with 100k
// River jobs, and a cached scrape, against a plain count(*) of the same table
// measured in the same run (the baseline): x_count is the ratio.
func BenchmarkQueueStats(b *testing.B) {
	db := pgtest.New(b)
	fillRiver(b, db, 100_000)
	c := newDBCollector(db.Pool, db.Schema, 0, 10*time.Second, func(s string) string { return s }, nil, discard())
	count := func() {
		var n int
		require.NoError(b, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job`).Scan(&n))
	}
	count() // warm the cache
	start := time.Now()
	for range 10 {
		count()
	}
	baseline := float64(time.Since(start).Nanoseconds()) / 10
	var countNs, refreshNs, cachedNs float64 // per operation, the last run of each
	b.Run("count_baseline", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			count()
		}
		countNs = float64(time.Since(start).Nanoseconds()) / float64(b.N)
	})
	b.Run("refresh", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			_, err := c.query(context.Background())
			require.NoError(b, err)
		}
		refreshNs = float64(time.Since(start).Nanoseconds()) / float64(b.N)
		b.ReportMetric(refreshNs/baseline, "x_count")
	})
	c.ttl = time.Hour
	b.Run("cached_scrape", func(b *testing.B) {
		ch := make(chan prometheus.Metric, 1000)
		c.Collect(ch) // the one refresh; later ones are cached
		for len(ch) > 0 {
			<-ch
		}
		start := time.Now()
		for b.Loop() {
			c.Collect(ch)
			for len(ch) > 0 {
				<-ch
			}
		}
		cachedNs = float64(time.Since(start).Nanoseconds()) / float64(b.N)
		b.ReportMetric(cachedNs/baseline, "x_count")
	})
	// Goals of ours (none is stated): a refresh, three queries in one
	// transaction and the projects count, costs at most 5 plain count(*)s (docs/metrics.md: 3–4×);
	// a cached scrape under 1% of one. Against count_baseline's run.
	refresh, cached := refreshNs/countNs, cachedNs/countNs
	benchproc.Target(os.Stdout, "queue figures refresh vs count(*) at 100k River jobs", fmt.Sprintf("%.2f", refresh), "≤ 5", refresh <= 5)
	benchproc.Target(os.Stdout, "cached scrape vs count(*) at 100k River jobs", fmt.Sprintf("%.4f", cached), "≤ 0.01", cached <= 0.01)
}

// kiln_projects counts the projects by status from the database, every
// status the API shows from zero, deleted ones left out; scrapes within the TTL reuse the figures.
func TestProjectsByStatus(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	InsertProjects(t, db.Pool, "provisioning", 2)
	InsertProjects(t, db.Pool, "ready", 3)
	InsertProjects(t, db.Pool, "failed", 1)
	InsertProjects(t, db.Pool, "deleted", 4)
	c := newDBCollector(db.Pool, db.Schema, 5*time.Second, 10*time.Second, func(s string) string { return s }, nil, discard())
	now := time.Now()
	c.now = func() time.Time { return now }
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))

	projects := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		require.NoError(t, err)
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "kiln_projects" {
				continue
			}
			for _, m := range mf.GetMetric() {
				require.Len(t, m.GetLabel(), 1)
				out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	assert.Equal(t, map[string]float64{"provisioning": 2, "ready": 3, "failed": 1, "deleting": 0}, projects())

	InsertProjects(t, db.Pool, "deleting", 1)
	assert.Equal(t, 0.0, projects()["deleting"], "within the TTL: the cached figures")
	assert.Equal(t, 1, c.queries)
	now = now.Add(5 * time.Second)
	assert.Equal(t, map[string]float64{"provisioning": 2, "ready": 3, "failed": 1, "deleting": 1}, projects())
	assert.Equal(t, 2, c.queries)
}

// When the projects query fails (here: a database without the status
// column of migration 00010) the refresh fails as a whole: the error is counted and nothing
// is served rather than half the figures.
func TestProjectsQueryFails(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	_, err := db.Pool.Exec(context.Background(), `ALTER TABLE projects DROP COLUMN IF EXISTS status`)
	require.NoError(t, err)
	c := newDBCollector(db.Pool, db.Schema, time.Nanosecond, 10*time.Second, func(s string) string { return s }, nil, discard())
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	n, err := testutil.GatherAndCount(reg, "kiln_projects", "kiln_queue_jobs")
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Equal(t, 1.0, c.errors)
}
