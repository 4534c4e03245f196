package metrics

import (
	"cmp"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
	"github.com/kilnbuild/kiln/dispatcher/internal/launcher"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// TemplateOther is the template label of a build whose template is not in
// the catalog (it cannot be launched, but its name must not add a series).
const TemplateOther = "other"

// Options configures New.
type Options struct {
	// Registry receives every metric, including the Go and process
	// collectors. Default: a new registry (never the global default one).
	Registry *prometheus.Registry
	// Pool is read by the queue collector; nil leaves the database-backed
	// metrics (kiln_queue_*, kiln_builds_in_flight, kiln_projects, ...) out.
	Pool *pgxpool.Pool
	// RiverSchema is the Postgres schema of River's tables; default: search_path.
	RiverSchema string
	// Templates bounds the template label; default: jobtemplates.Embedded().
	Templates *jobtemplates.Catalog
	// CacheTTL is how long the database-backed figures are reused between
	// scrapes; default 5s.
	CacheTTL time.Duration
	// QueryTimeout bounds the collector's queries; default 5s.
	QueryTimeout time.Duration
	// Workers reports this process's River workers by queue (empty while
	// they are not running); nil reports none.
	Workers func() map[string]int
	// Informers reports how many objects this process's informers cache,
	// by resource (watcher.Watcher.Cached); nil, or nil from it, reports 0.
	Informers func() map[string]int
	// Logger; default: discard.
	Logger *slog.Logger
}

// Metrics holds the dispatcher's metrics and the hooks that feed them.
type Metrics struct {
	registry  *prometheus.Registry
	templates map[string]bool
	logger    *slog.Logger

	builds       *prometheus.CounterVec
	started      *prometheus.CounterVec
	queueWait    *prometheus.HistogramVec
	run          *prometheus.HistogramVec
	duration     *prometheus.HistogramVec
	launch       prometheus.Histogram
	launchErrors *prometheus.CounterVec
	callbacks    *prometheus.CounterVec
	cost         *prometheus.CounterVec
	tokens       *prometheus.CounterVec
	turns        *prometheus.HistogramVec
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	provisioned  *prometheus.HistogramVec
	stepFailures *prometheus.CounterVec
	stepDuration *prometheus.HistogramVec
	followups    *prometheus.CounterVec
	budgetStops  prometheus.Counter
	keptWork     prometheus.Counter
	spend        *prometheus.CounterVec

	db *dbCollector
}

// Bucket layouts, in seconds.
var (
	queueWaitBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200}
	runBuckets       = []float64{5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200, 14400, 43200, 86400}
	launchBuckets    = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	turnBuckets      = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500}
	httpBuckets      = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
)

// New registers the dispatcher's metrics on o.Registry.
func New(o Options) (*Metrics, error) {
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	catalog := cmp.Or(o.Templates, jobtemplates.Embedded())
	m := &Metrics{
		registry:  reg,
		templates: map[string]bool{},
		logger:    cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "metrics"),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_builds_total",
			Help: "Builds that reached a terminal status, by outcome (completed, failed, cancelled), failure reason and template."},
			[]string{"outcome", "reason", "template"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_builds_started_total",
			Help: "Builds whose Job was created and that became running, by template."}, []string{"template"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_build_queue_wait_seconds",
			Help:    "Time from acceptance to running (or to the end, for builds that never ran) of terminal builds.",
			Buckets: queueWaitBuckets}, []string{"template", "outcome"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_build_run_seconds",
			Help:    "Time from running to terminal of builds that ran.",
			Buckets: runBuckets}, []string{"template", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_build_duration_seconds",
			Help:    "Time from acceptance to terminal status.",
			Buckets: runBuckets}, []string{"template", "outcome"}),
		launch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kiln_job_launch_seconds",
			Help:    "Time to create a build's Job and Secret and mark it running (successful launches).",
			Buckets: launchBuckets}),
		launchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_job_launch_errors_total",
			Help: "Failed attempts at creating a build's Job, by reason."}, []string{"reason"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_callback_deliveries_total",
			Help: "Callback delivery attempts, by outcome (delivered, retry, failed)."}, []string{"outcome"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_agent_cost_usd_total",
			Help: "Cost the agents reported, in US dollars, by template."}, []string{"template"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_agent_tokens_total",
			Help: "Tokens the agents reported, by direction (input, output) and template."}, []string{"direction", "template"}),
		turns: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_agent_turns",
			Help: "Agent turns per build that reported usage.", Buckets: turnBuckets}, []string{"template"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_http_requests_total",
			Help: "HTTP requests answered, by route pattern (\"unmatched\" for none), method and status code."},
			[]string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern and method; event streams (SSE, WebSocket) are not observed.",
			Buckets: httpBuckets}, []string{"route", "method"}),
		provisioned: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_provisioning_duration_seconds",
			Help:    "Time from a managed project's POST to ready (outcome ready) or to failed and rolled back (outcome failed).",
			Buckets: provisionBuckets}, []string{"outcome"}),
		stepFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_provisioning_step_failures_total",
			Help: "Failed attempts at a managed project's provisioning step (retries included; rollback for undoing the completed steps), by step."},
			[]string{"step"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_provisioning_step_duration_seconds",
			Help:    "Time of a successful attempt at a managed project's provisioning step, by step.",
			Buckets: stepBuckets}, []string{"step"}),
		followups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_followups_total",
			Help: "Follow-up builds accepted (POST /builds/{taskId}/followups), by fallback (none, fresh)."}, []string{"fallback"}),
		budgetStops: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_budget_stops_total",
			Help: "Builds that failed because the agent reached the build's max_budget_usd (reason budget_exceeded)."}),
		keptWork: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_kept_work_total",
			Help: "Failed or cancelled builds whose changes the runner kept on a kiln/<task_id> branch (result partial_branch)."}),
		spend: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_spend_usd_total",
			Help: "Cost the agents reported, in US dollars, by project id (what monthly budgets count)."}, []string{"project"}),
	}
	deadline := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_template_deadline_seconds",
		Help: "The activeDeadlineSeconds of each job template in the catalog."}, []string{"template"})
	for _, name := range catalog.Names() {
		m.templates[name] = true
		if t, ok := catalog.Get(name); ok {
			deadline.WithLabelValues(name).Set(float64(t.ActiveDeadlineSeconds))
		}
	}
	m.initSeries()

	cs := []prometheus.Collector{m.builds, m.started, m.queueWait, m.run, m.duration, m.launch, m.launchErrors,
		m.callbacks, m.cost, m.tokens, m.turns, m.httpRequests, m.httpDuration, m.provisioned, m.stepFailures,
		m.stepDuration, m.followups, m.budgetStops, m.keptWork, m.spend, deadline,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	cs = append(cs, newWorkersCollector(o.Workers), newInformersCollector(o.Informers))
	if o.Pool != nil {
		m.db = newDBCollector(o.Pool, o.RiverSchema, cmp.Or(o.CacheTTL, 5*time.Second),
			cmp.Or(o.QueryTimeout, 5*time.Second), m.template, catalog.Names(), m.logger)
		cs = append(cs, m.db)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// initSeries creates every series of the fixed label sets at zero, so rates
// and ratios exist before the first event.
func (m *Metrics) initSeries() {
	names := append(slices.Sorted(maps.Keys(m.templates)), TemplateOther)
	for _, t := range names {
		m.builds.WithLabelValues(string(schema.StatusCompleted), schema.ReasonNone.Label(), t)
		m.builds.WithLabelValues(string(schema.StatusCancelled), schema.ReasonCancelled.Label(), t)
		for _, r := range schema.FailureReasons {
			m.builds.WithLabelValues(string(schema.StatusFailed), r.Label(), t)
		}
		m.started.WithLabelValues(t)
	}
	for _, r := range launcher.LaunchErrors {
		m.launchErrors.WithLabelValues(string(r))
	}
	for _, o := range []string{callback.OutcomeDelivered, callback.OutcomeRetry, callback.OutcomeFailed} {
		m.callbacks.WithLabelValues(o)
	}
	for _, o := range []string{ProvisionReady, ProvisionFailed} {
		m.provisioned.WithLabelValues(o)
	}
	for _, s := range ProvisionSteps {
		m.stepFailures.WithLabelValues(s)
		m.stepDuration.WithLabelValues(s)
	}
	for _, f := range []schema.Fallback{schema.FallbackNone, schema.FallbackFresh} {
		m.followups.WithLabelValues(fallbackLabel(f))
	}
}

// FallbackNoneLabel is the fallback label of a follow-up without one.
const FallbackNoneLabel = "none"

func fallbackLabel(f schema.Fallback) string {
	if f == schema.FallbackFresh {
		return string(schema.FallbackFresh)
	}
	return FallbackNoneLabel
}

// Followup observes an accepted follow-up (intake.Options.OnFollowup).
func (m *Metrics) Followup(f schema.Fallback) {
	m.followups.WithLabelValues(fallbackLabel(f)).Inc()
}

// Registry is where the metrics live.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus exposition format. A failing
// collector leaves its metrics out rather than failing the whole scrape.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.registry, // promhttp_metric_handler_errors_total
		MaxRequestsInFlight: 4,
		Timeout:             20 * time.Second,
	})
}

func (m *Metrics) template(name string) string {
	if name == "" {
		name = schema.DefaultTemplate
	}
	if m.templates[name] {
		return name
	}
	return TemplateOther
}

// Transition observes a committed status change (lifecycle.OnTransition).
func (m *Metrics) Transition(b *store.Build) {
	if b == nil {
		return
	}
	tmpl := m.template(b.Spec.Template)
	if b.Status == schema.StatusRunning {
		m.started.WithLabelValues(tmpl).Inc()
		return
	}
	if !b.Status.Terminal() {
		return
	}
	outcome := string(b.Status)
	m.builds.WithLabelValues(outcome, reasonLabel(b), tmpl).Inc()
	end := time.Now()
	if b.FinishedAt != nil {
		end = *b.FinishedAt
	}
	if b.StartedAt != nil {
		m.queueWait.WithLabelValues(tmpl, outcome).Observe(seconds(b.StartedAt.Sub(b.CreatedAt)))
		m.run.WithLabelValues(tmpl, outcome).Observe(seconds(end.Sub(*b.StartedAt)))
	} else {
		m.queueWait.WithLabelValues(tmpl, outcome).Observe(seconds(end.Sub(b.CreatedAt)))
	}
	m.duration.WithLabelValues(tmpl, outcome).Observe(seconds(end.Sub(b.CreatedAt)))
	if b.Status == schema.StatusFailed && b.Reason == schema.ReasonBudgetExceeded {
		m.budgetStops.Inc()
	}
	m.result(b, tmpl)
}

// result observes what a terminal build's result tells: its kept work and
// the agent's usage (cost, spend, tokens, turns).
func (m *Metrics) result(b *store.Build, tmpl string) {
	if b.Result == nil {
		return
	}
	if b.Status != schema.StatusCompleted && b.Result.PartialBranch != "" {
		m.keptWork.Inc()
	}
	if u := b.Result.Usage; u != nil {
		if u.CostUSD > 0 && !math.IsInf(u.CostUSD, 0) {
			m.cost.WithLabelValues(tmpl).Add(u.CostUSD)
			m.spend.WithLabelValues(b.ProjectID).Add(u.CostUSD)
		}
		m.tokens.WithLabelValues("input", tmpl).Add(float64(max(u.InputTokens, 0)))
		m.tokens.WithLabelValues("output", tmpl).Add(float64(max(u.OutputTokens, 0)))
		m.turns.WithLabelValues(tmpl).Observe(float64(max(u.Turns, 0)))
	}
}

// StoppedResult observes a stopped runner's account kept on a build that had
// no result (lifecycle.OnStoppedResult). A build still running is counted by
// Transition when it ends; one already terminal (cancelled, or ended by the
// watcher first) was counted without it, so its result counts now.
func (m *Metrics) StoppedResult(b *store.Build) {
	if m == nil || b == nil || !b.Status.Terminal() {
		return
	}
	m.result(b, m.template(b.Spec.Template))
}

// reasonLabel is the reason label of a terminal build: its stored reason,
// or "other" when it is not one of the fixed set (the label stays bounded).
func reasonLabel(b *store.Build) string {
	switch {
	case b.Status == schema.StatusCompleted:
		return schema.ReasonNone.Label()
	case b.Status == schema.StatusCancelled:
		return schema.ReasonCancelled.Label()
	case b.Reason == schema.ReasonNone || !b.Reason.Valid() || b.Reason == schema.ReasonCancelled:
		return schema.ReasonOther.Label()
	}
	return b.Reason.Label()
}

// Launch observes an attempt at creating a build's Job (launcher.OnLaunch).
func (m *Metrics) Launch(_ *store.Build, took time.Duration, failed launcher.LaunchError) {
	if failed != "" {
		if !slices.Contains(launcher.LaunchErrors, failed) {
			failed = launcher.LaunchOther
		}
		m.launchErrors.WithLabelValues(string(failed)).Inc()
		return
	}
	m.launch.Observe(seconds(took))
}

// Callback observes a callback delivery attempt by outcome (callback.Options.OnAttempt).
func (m *Metrics) Callback(outcome string) {
	switch outcome {
	case callback.OutcomeDelivered, callback.OutcomeRetry, callback.OutcomeFailed:
	default:
		outcome = callback.OutcomeFailed
	}
	m.callbacks.WithLabelValues(outcome).Inc()
}

func seconds(d time.Duration) float64 { return max(d.Seconds(), 0) }

// HTTP observes one answered request (api.Options.OnRequest). route is the
// router's pattern, so the labels stay bounded; stream says the answer was an
// event stream, whose duration is the client's and is not observed.
func (m *Metrics) HTTP(route, method string, code int, took time.Duration, stream bool) {
	if route == "" {
		route = "unmatched"
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "other"
	}
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	if !stream {
		m.httpDuration.WithLabelValues(route, method).Observe(took.Seconds())
	}
}
