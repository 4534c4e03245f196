package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river/rivertype"

	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/watcher"
	"github.com/kilnbuild/kiln/schema"
)

var (
	descQueueJobs = prometheus.NewDesc("kiln_queue_jobs",
		"River jobs by queue and state (database-wide: every replica reports the same figure; aggregate with max).",
		[]string{"queue", "state"}, nil)
	descQueueOldest = prometheus.NewDesc("kiln_queue_oldest_available_seconds",
		"Age of the oldest River job that is available to work but not taken, by queue; 0 when none waits.",
		[]string{"queue"}, nil)
	descInFlight = prometheus.NewDesc("kiln_builds_in_flight",
		"Builds not yet terminal, by status (pending, running); database-wide.",
		[]string{"status"}, nil)
	descOldestBuild = prometheus.NewDesc("kiln_build_oldest_in_flight_seconds",
		"Age of the oldest non-terminal build by status and template: since acceptance for pending, since start for running.",
		[]string{"status", "template"}, nil)
	descProjects = prometheus.NewDesc("kiln_projects",
		"Projects by status (provisioning, ready, failed, deleting); deleted ones are not counted. Database-wide.",
		[]string{"status"}, nil)
	descStatsAge = prometheus.NewDesc("kiln_queue_stats_age_seconds",
		"How old the database-backed figures of this scrape are (they are cached between scrapes).", nil, nil)
	descStatsQuery = prometheus.NewDesc("kiln_queue_stats_query_seconds",
		"How long the last refresh of the database-backed figures took.", nil, nil)
	descStatsErrors = prometheus.NewDesc("kiln_queue_stats_errors_total",
		"Failed refreshes of the database-backed figures (the previous figures are served).", nil, nil)
	descWorkers = prometheus.NewDesc("kiln_river_workers",
		"River workers this process runs, by queue; 0 while it is not working (stopped or insert-only).",
		[]string{"queue"}, nil)
	descInformers = prometheus.NewDesc("kiln_informer_objects",
		"Objects this process's informers cache, by resource (jobs, pods): Kiln's build Jobs and their pods until the Jobs are removed; 0 without a cluster.",
		[]string{"resource"}, nil)
)

// riverStates lists every River job state, so each queue reports all of them.
var riverStates = []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStateCancelled,
	rivertype.JobStateCompleted, rivertype.JobStateDiscarded, rivertype.JobStatePending,
	rivertype.JobStateRetryable, rivertype.JobStateRunning, rivertype.JobStateScheduled}

// knownQueues always report, even while empty.
var knownQueues = []string{queue.QueueDispatch, queue.QueueCallbacks}

type buildKey struct{ status, template string }

type dbStats struct {
	jobs     map[[2]string]float64 // {queue, state}
	oldest   map[string]float64    // queue
	inFlight map[string]float64    // status
	oldestB  map[buildKey]float64
	projects map[string]float64 // status
}

// dbCollector reads queue, in-flight and project figures from Postgres, at most once
// per ttl; concurrent scrapes share one refresh.
type dbCollector struct {
	pool        *pgxpool.Pool
	riverSchema string // River's tables' schema; empty: search_path
	ttl         time.Duration
	timeout     time.Duration
	template    func(string) string
	templates   []string // always reported in kiln_build_oldest_in_flight_seconds, 0 when none
	logger      *slog.Logger

	mu      sync.Mutex
	stats   *dbStats
	at      time.Time
	took    time.Duration
	errors  float64
	now     func() time.Time
	queries int // refreshes done; for tests
}

func newDBCollector(pool *pgxpool.Pool, riverSchema string, ttl, timeout time.Duration, template func(string) string, templates []string, logger *slog.Logger) *dbCollector {
	return &dbCollector{pool: pool, riverSchema: riverSchema, ttl: ttl, timeout: timeout, template: template, templates: templates,
		logger: logger, now: time.Now}
}

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueJobs, descQueueOldest, descInFlight, descOldestBuild, descProjects, descStatsAge, descStatsQuery, descStatsErrors} {
		ch <- d
	}
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.stats == nil || now.Sub(c.at) >= c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		start := time.Now()
		s, err := c.query(ctx)
		cancel()
		c.queries++
		if err != nil {
			c.errors++
			c.logger.Warn("reading queue figures", "error", err)
		} else {
			c.stats, c.at, c.took = s, now, time.Since(start)
		}
	}
	ch <- prometheus.MustNewConstMetric(descStatsErrors, prometheus.CounterValue, c.errors)
	if c.stats == nil {
		return // never read: report nothing rather than zeros
	}
	ch <- prometheus.MustNewConstMetric(descStatsAge, prometheus.GaugeValue, now.Sub(c.at).Seconds())
	ch <- prometheus.MustNewConstMetric(descStatsQuery, prometheus.GaugeValue, c.took.Seconds())
	for k, v := range c.stats.jobs {
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, v, k[0], k[1])
	}
	for q, v := range c.stats.oldest {
		ch <- prometheus.MustNewConstMetric(descQueueOldest, prometheus.GaugeValue, v, q)
	}
	for s, v := range c.stats.inFlight {
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, v, s)
	}
	for k, v := range c.stats.oldestB {
		ch <- prometheus.MustNewConstMetric(descOldestBuild, prometheus.GaugeValue, v, k.status, k.template)
	}
	for st, v := range c.stats.projects {
		ch <- prometheus.MustNewConstMetric(descProjects, prometheus.GaugeValue, v, st)
	}
}

// query reads every figure (in one transaction, so they agree with each
// other) and fills in the zeros of what has none.
func (c *dbCollector) query(ctx context.Context) (*dbStats, error) {
	s := &dbStats{jobs: map[[2]string]float64{}, oldest: map[string]float64{},
		inFlight: map[string]float64{string(schema.StatusPending): 0, string(schema.StatusRunning): 0},
		oldestB:  map[buildKey]float64{}, projects: map[string]float64{}}
	for _, st := range schema.ProjectStatuses {
		s.projects[string(st)] = 0
	}
	for _, q := range knownQueues {
		for _, st := range riverStates {
			s.jobs[[2]string{q, string(st)}] = 0
		}
		s.oldest[q] = 0
	}
	for _, t := range c.templates {
		for st := range s.inFlight {
			s.oldestB[buildKey{st, t}] = 0
		}
	}
	db, err := store.ReadQueueStats(ctx, c.pool, c.riverSchema, knownQueues)
	if err != nil {
		return nil, err
	}
	for _, j := range db.Jobs {
		if _, ok := s.oldest[j.Queue]; !ok { // a queue Kiln does not know: report its states too
			for _, rs := range riverStates {
				s.jobs[[2]string{j.Queue, string(rs)}] += 0
			}
			s.oldest[j.Queue] = 0
		}
		s.jobs[[2]string{j.Queue, j.State}] = float64(j.N)
	}
	for _, o := range db.Oldest {
		s.oldest[o.Queue] = max(o.AgeSeconds, 0)
	}
	for _, b := range db.Builds {
		s.inFlight[b.Status] += float64(b.N)
		k := buildKey{b.Status, c.template(b.Template)}
		s.oldestB[k] = max(s.oldestB[k], b.OldestSeconds, 0)
	}
	projects, err := readProjects(ctx, c.pool)
	if err != nil {
		return nil, err
	}
	for st, n := range projects {
		if _, ok := s.projects[st]; !ok {
			// Not a status the API shows: leave it out, so the label
			// stays the documented set.
			c.logger.Warn("a project status metrics do not know", "status", st, "projects", n)
			continue
		}
		s.projects[st] = float64(n)
	}
	return s, nil
}

// workersCollector reports this process's River workers.
type workersCollector struct{ workers func() map[string]int }

func newWorkersCollector(f func() map[string]int) *workersCollector { return &workersCollector{f} }

func (c *workersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descWorkers }

func (c *workersCollector) Collect(ch chan<- prometheus.Metric) {
	var w map[string]int
	if c.workers != nil {
		w = c.workers()
	}
	for _, q := range knownQueues {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(w[q]), q)
	}
	for q, n := range w {
		if q != queue.QueueDispatch && q != queue.QueueCallbacks {
			ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), q)
		}
	}
}

// informerResources always report in kiln_informer_objects, 0 when none.
var informerResources = []string{watcher.ResourceJobs, watcher.ResourcePods}

// informersCollector reports the sizes of this process's informer caches.
type informersCollector struct{ cached func() map[string]int }

func newInformersCollector(f func() map[string]int) *informersCollector {
	return &informersCollector{f}
}

func (c *informersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descInformers }

func (c *informersCollector) Collect(ch chan<- prometheus.Metric) {
	var n map[string]int
	if c.cached != nil {
		n = c.cached()
	}
	for _, r := range informerResources {
		ch <- prometheus.MustNewConstMetric(descInformers, prometheus.GaugeValue, float64(n[r]), r)
	}
}
