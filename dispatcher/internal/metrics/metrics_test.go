package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
	"github.com/kilnbuild/kiln/dispatcher/internal/launcher"
	"github.com/kilnbuild/kiln/dispatcher/internal/metrics"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	kiln "github.com/kilnbuild/kiln/schema"
)

// Families is a parsed scrape.
type Families map[string]*dto.MetricFamily

// Scrape GETs url's /metrics, checks the exposition lints clean and parses it.
func Scrape(t testing.TB, baseURL string) Families {
	t.Helper()
	res, err := http.Get(baseURL + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	require.NoError(t, err)
	require.Empty(t, problems, "the exposition lints clean")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	return fams
}

func match(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Value sums the counters or gauges of name whose labels include labels (name, value pairs).
func (f Families) Value(name string, labels ...string) float64 {
	var v float64
	for _, m := range f[name].GetMetric() {
		if match(m, labels) {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return v
}

// Hist sums the count and sum of the histograms of name matching labels.
func (f Families) Hist(name string, labels ...string) (count uint64, sum float64) {
	for _, m := range f[name].GetMetric() {
		if match(m, labels) {
			count += m.GetHistogram().GetSampleCount()
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return count, sum
}

type env struct {
	t       *testing.T
	db      *pgtest.DB
	app     *app.App
	reg     *prometheus.Registry
	srv     *httptest.Server
	admin   string
	project string
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	allow, err := callback.ParseAllowlist("127.0.0.1")
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	a := apptest.New(t, app.Options{Workers: 2, Registry: reg, CallbackAllowlist: allow, CallbackTimeout: 5 * time.Second})
	p, err := a.Client.CreateProject(context.Background(), kiln.ProjectInput{Name: "web"})
	require.NoError(t, err)
	return &env{t: t, db: a.DB, app: a.App, reg: reg, srv: a.Server, admin: a.Admin, project: p.ID}
}

func (e *env) post(path string, body any, want int, out any) {
	e.t.Helper()
	j, err := json.Marshal(body)
	require.NoError(e.t, err)
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(j))
	require.NoError(e.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	require.Equal(e.t, want, res.StatusCode, "POST %s: %s", path, b)
	if out != nil {
		require.NoError(e.t, json.Unmarshal(b, out))
	}
}

// submit starts a build through the API and returns its id.
func (e *env) submit(spec map[string]any) string {
	e.t.Helper()
	var acc kiln.BuildAccepted
	e.post("/projects/"+e.project+"/builds", spec, http.StatusAccepted, &acc)
	return acc.TaskID
}

func (e *env) running(id string) {
	e.t.Helper()
	_, err := e.app.Lifecycle.Start(context.Background(), id, "kiln-"+id[:8])
	require.NoError(e.t, err)
}

func (e *env) fail(id string, reason kiln.Reason, msg string) {
	e.t.Helper()
	_, err := e.app.Lifecycle.Fail(context.Background(), id, reason, msg)
	require.NoError(e.t, err)
}

func (e *env) result(id string, res kiln.BuildResult) {
	e.t.Helper()
	ack, err := e.app.Lifecycle.Finish(context.Background(), id, res, "test")
	require.NoError(e.t, err)
	require.True(e.t, ack.Accepted)
}

// Builds submitted through the API and finished through the runner API and
// the lifecycle show up in a scrape of /metrics with the right values.
func TestBuildMetricsThroughAPI(t *testing.T) {
	e := setup(t)
	var delivered atomic.Int32
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	ok := e.submit(map[string]any{"prompt": "ok", "callback_url": receiver.URL + "/cb"})
	e.running(ok)
	e.result(ok, kiln.BuildResult{Success: true, CommitSHA: "abc", DurationMS: 1200,
		Usage: &kiln.Usage{CostUSD: 0.25, Turns: 7, InputTokens: 1000, OutputTokens: 200}})

	agentFailed := e.submit(map[string]any{"prompt": "fails", "template": "readonly"})
	e.running(agentFailed)
	e.result(agentFailed, kiln.BuildResult{Success: false, Error: "the agent gave up",
		Usage: &kiln.Usage{CostUSD: 0.5, Turns: 3, InputTokens: 10, OutputTokens: 5}})

	timedOut := e.submit(map[string]any{"prompt": "slow"})
	e.running(timedOut)
	e.fail(timedOut, kiln.ReasonDeadline, "timed out after 1h0m0s")

	cancelled := e.submit(map[string]any{"prompt": "never mind"})
	e.post("/builds/"+cancelled+"/cancel", map[string]any{}, http.StatusOK, nil)

	e.submit(map[string]any{"prompt": "waits"}) // stays pending
	e.running(e.submit(map[string]any{"prompt": "runs"}))

	require.Eventually(t, func() bool {
		return Scrape(t, e.srv.URL).Value("kiln_callback_deliveries_total", "outcome", "delivered") == 1
	}, 30*time.Second, 50*time.Millisecond, "the callback delivery is counted")
	assert.EqualValues(t, 1, delivered.Load())

	f := Scrape(t, e.srv.URL)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"outcome", "completed", "reason", "none", "template", "default"}, 1},
		{[]string{"outcome", "failed", "reason", "runner_error", "template", "readonly"}, 1},
		{[]string{"outcome", "failed", "reason", "deadline", "template", "default"}, 1},
		{[]string{"outcome", "cancelled", "reason", "cancelled", "template", "default"}, 1},
		{[]string{"outcome", "failed", "reason", "oom"}, 0},
		{nil, 4},
	} {
		assert.Equal(t, c.want, f.Value("kiln_builds_total", c.labels...), "kiln_builds_total%v", c.labels)
	}
	assert.Equal(t, 4.0, f.Value("kiln_builds_started_total"))
	assert.Equal(t, 1.0, f.Value("kiln_builds_in_flight", "status", "pending"))
	assert.Equal(t, 1.0, f.Value("kiln_builds_in_flight", "status", "running"))
	assert.Positive(t, f.Value("kiln_build_oldest_in_flight_seconds", "status", "running", "template", "default"))
	assert.Equal(t, 0.75, f.Value("kiln_agent_cost_usd_total"))
	assert.Equal(t, 1010.0, f.Value("kiln_agent_tokens_total", "direction", "input"))
	assert.Equal(t, 205.0, f.Value("kiln_agent_tokens_total", "direction", "output"))
	n, sum := f.Hist("kiln_agent_turns")
	assert.EqualValues(t, 2, n)
	assert.Equal(t, 10.0, sum)

	n, _ = f.Hist("kiln_build_duration_seconds")
	assert.EqualValues(t, 4, n, "every terminal build has a total duration")
	n, _ = f.Hist("kiln_build_run_seconds")
	assert.EqualValues(t, 3, n, "the cancelled build never ran")
	n, _ = f.Hist("kiln_build_queue_wait_seconds", "outcome", "cancelled")
	assert.EqualValues(t, 1, n, "a build cancelled while pending waited until its end")
	n, _ = f.Hist("kiln_build_run_seconds", "template", "readonly", "outcome", "failed")
	assert.EqualValues(t, 1, n)

	// River's jobs: one dispatch job per build, whatever state each is in
	// (without a cluster the dispatch worker snoozes them); the exact counts
	// by state are checked with 100k jobs in TestQueueStats100k.
	assert.Equal(t, 6.0, f.Value("kiln_queue_jobs", "queue", "dispatch"))
	for _, st := range []string{"available", "running", "retryable", "scheduled", "completed", "discarded", "pending", "cancelled"} {
		assert.Contains(t, labelValues(f["kiln_queue_jobs"], "state"), st, "every River state is reported")
	}
	assert.Equal(t, 2.0, f.Value("kiln_river_workers", "queue", "dispatch"))
	assert.Equal(t, 10.0, f.Value("kiln_river_workers", "queue", "callbacks"))
	assert.Positive(t, f.Value("kiln_template_deadline_seconds", "template", "default"))
	assert.Zero(t, f.Value("kiln_queue_stats_errors_total"))
	assert.Equal(t, 1.0, f.Value("kiln_projects", "status", "ready"), "the bring-your-own-pod project is ready")
	assert.Equal(t, 1.0, f.Value("kiln_projects"), "and the only one")
	assert.Len(t, f["kiln_projects"].GetMetric(), len(kiln.ProjectStatuses), "every status from zero")

	// The Go and process collectors are there too.
	assert.Contains(t, f, "go_goroutines")
	assert.Contains(t, f, "process_resident_memory_bytes")

	// The registry itself lints clean (names, units, help).
	problems, err := testutil.GatherAndLint(e.reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func labelValues(mf *dto.MetricFamily, name string) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == name {
				out = append(out, lp.GetValue())
			}
		}
	}
	return out
}

// Hooks that have no cluster here (launcher, watcher) feed their metrics,
// and label values stay within their fixed sets.
func TestHooks(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registry: reg})
	require.NoError(t, err)
	b := &store.Build{}
	m.Launch(b, 150*time.Millisecond, "")
	m.Launch(b, time.Second, launcher.ClassifyLaunchError(apierrors.NewForbidden(schema.GroupResource{Resource: "jobs"}, "x", errors.New("exceeded quota: q"))))
	m.Launch(b, time.Second, launcher.ClassifyLaunchError(apierrors.NewInvalid(schema.GroupKind{Kind: "Job"}, "x", nil)))
	m.Launch(b, time.Second, launcher.ClassifyLaunchError(errors.New("dial tcp: connection refused")))
	m.Launch(b, time.Second, "surprising") // not one of the set: counted as other
	m.Callback(callback.OutcomeRetry)
	m.Callback("surprising")

	// An unknown template is counted as "other", never as a new series.
	now := time.Now()
	m.Transition(&store.Build{Build: kiln.Build{Status: kiln.StatusFailed, Spec: kiln.BuildSpec{Template: "gone"},
		Reason: kiln.ReasonOOM, Error: "out of memory (limit 1Gi)", CreatedAt: now.Add(-time.Minute), FinishedAt: &now}})

	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	f := Scrape(t, srv.URL)
	n, sum := f.Hist("kiln_job_launch_seconds")
	assert.EqualValues(t, 1, n)
	assert.InDelta(t, 0.15, sum, 1e-9)
	assert.Equal(t, 1.0, f.Value("kiln_job_launch_errors_total", "reason", "quota_exceeded"))
	assert.Equal(t, 1.0, f.Value("kiln_job_launch_errors_total", "reason", "invalid"))
	assert.Equal(t, 2.0, f.Value("kiln_job_launch_errors_total", "reason", "other"))
	assert.Equal(t, 1.0, f.Value("kiln_callback_deliveries_total", "outcome", "retry"))
	assert.Equal(t, 1.0, f.Value("kiln_callback_deliveries_total", "outcome", "failed"))
	assert.Equal(t, 1.0, f.Value("kiln_builds_total", "outcome", "failed", "reason", "oom", "template", "other"))
	assert.NotContains(t, labelValues(f["kiln_builds_total"], "template"), "gone")
	assert.NotContains(t, f, "kiln_queue_jobs", "no pool: no database figures")
	for _, mf := range f {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				assert.False(t, strings.Contains(lp.GetValue(), " "), "label %s=%q", lp.GetName(), lp.GetValue())
			}
		}
	}
}

// kiln_informer_objects reports each resource's cache size from the hook,
// and 0 for every resource without one (no cluster, an insert-only app).
func TestInformerObjects(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		hook       func() map[string]int
		jobs, pods float64
	}{
		"no hook":          {nil, 0, 0},
		"hook without one": {func() map[string]int { return nil }, 0, 0},
		"cached":           {func() map[string]int { return map[string]int{"jobs": 1000, "pods": 998} }, 1000, 998},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := metrics.New(metrics.Options{Registry: prometheus.NewRegistry(), Informers: tc.hook})
			require.NoError(t, err)
			srv := httptest.NewServer(m.Handler())
			t.Cleanup(srv.Close)
			f := Scrape(t, srv.URL)
			assert.Len(t, f["kiln_informer_objects"].GetMetric(), 2)
			assert.Equal(t, tc.jobs, f.Value("kiln_informer_objects", "resource", "jobs"))
			assert.Equal(t, tc.pods, f.Value("kiln_informer_objects", "resource", "pods"))
		})
	}
}

// The reason label is the build's stored reason: nothing reads it out of
// the error text, and a value outside the fixed set is counted as other.
func TestReasonLabel(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registry: reg})
	require.NoError(t, err)
	now := time.Now()
	for _, c := range []struct {
		status kiln.Status
		reason kiln.Reason
		err    string
		want   string
	}{
		{kiln.StatusCompleted, "", "", "none"},
		{kiln.StatusCancelled, kiln.ReasonCancelled, "cancelled by bot", "cancelled"},
		{kiln.StatusFailed, kiln.ReasonPushRejected, "push rejected", "push_rejected"},
		{kiln.StatusFailed, kiln.ReasonDeadline, "job deleted", "deadline"}, // the text does not matter
		{kiln.StatusFailed, kiln.ReasonOOM, "", "oom"},
		{kiln.StatusFailed, "", "out of memory (limit 2Gi)", "other"},
		{kiln.StatusFailed, "made_up", "", "other"},
	} {
		reg := prometheus.NewRegistry()
		m, err = metrics.New(metrics.Options{Registry: reg})
		require.NoError(t, err)
		m.Transition(&store.Build{Build: kiln.Build{Status: c.status, Reason: c.reason, Error: c.err,
			CreatedAt: now.Add(-time.Second), FinishedAt: &now}})
		srv := httptest.NewServer(m.Handler())
		f := Scrape(t, srv.URL)
		srv.Close()
		assert.Equal(t, 1.0, f.Value("kiln_builds_total", "outcome", string(c.status), "reason", c.want), "%s %q", c.status, c.reason)
		assert.Equal(t, 1.0, f.Value("kiln_builds_total"), "one build counted once")
	}
}

// Every answered request is counted by route pattern, method and code, and
// timed; an event stream is counted but not timed; a path no route matches
// is "unmatched", so the labels stay bounded whatever clients send.
func TestHTTPMetrics(t *testing.T) {
	e := setup(t)
	id := e.submit(map[string]any{"prompt": "x"})
	e.post("/projects/"+e.project+"/builds", map[string]any{"prompt": ""}, http.StatusUnprocessableEntity, nil)
	for _, p := range []string{"/no/such/path/1", "/no/such/path/2"} {
		res, err := http.Get(e.srv.URL + p)
		require.NoError(t, err)
		res.Body.Close()
	}
	// A finished build's SSE stream replays and ends at once.
	_, err := e.app.Lifecycle.Cancel(context.Background(), id, "stop")
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/builds/"+id+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()

	f := Scrape(t, e.srv.URL)
	route := "/projects/{id}/builds"
	assert.Equal(t, 1.0, f.Value("kiln_http_requests_total", "route", route, "method", "POST", "code", "202"))
	assert.Equal(t, 1.0, f.Value("kiln_http_requests_total", "route", route, "method", "POST", "code", "422"))
	n, sum := f.Hist("kiln_http_request_duration_seconds", "route", route, "method", "POST")
	assert.Equal(t, uint64(2), n)
	assert.Positive(t, sum)
	assert.Equal(t, 2.0, f.Value("kiln_http_requests_total", "route", "unmatched", "method", "GET", "code", "404"))
	stream := "/builds/{taskId}/events"
	assert.Equal(t, 1.0, f.Value("kiln_http_requests_total", "route", stream, "method", "GET", "code", "200"))
	n, _ = f.Hist("kiln_http_request_duration_seconds", "route", stream)
	assert.Zero(t, n, "streams are not timed")
}

// The provisioning worker's hooks feed the provisioning metrics; every
// step of the fixed set and both outcomes exist from zero, and a step name
// outside the set is counted as other, never as a new series.
func TestProvisioningHooks(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registry: reg})
	require.NoError(t, err)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)

	f := Scrape(t, srv.URL)
	assert.ElementsMatch(t, metrics.ProvisionSteps, labelValues(f["kiln_provisioning_step_failures_total"], "step"))
	assert.ElementsMatch(t, metrics.ProvisionSteps, labelValues(f["kiln_provisioning_step_duration_seconds"], "step"))
	assert.ElementsMatch(t, []string{"ready", "failed"}, labelValues(f["kiln_provisioning_duration_seconds"], "outcome"))
	assert.Zero(t, f.Value("kiln_provisioning_step_failures_total"))

	m.ProvisionStep("namespace", 20*time.Millisecond, false)
	m.ProvisionStep("addon:postgres", time.Second, true) // a failed attempt, then its retry
	m.ProvisionStep("addon:postgres", 300*time.Millisecond, false)
	m.ProvisionStep("workspace", 4*time.Second, true)
	m.ProvisionStep("rollback", 2*time.Second, false)
	m.ProvisionStep("addon:mysql", 50*time.Millisecond, false) // a third adapter's step
	m.ProvisionStep("workspace for project web", time.Second, true)
	m.ProvisionStep("addon:Bad Type", time.Second, true)
	m.Provisioned(12*time.Second, true)
	m.Provisioned(30*time.Second, true)
	m.Provisioned(8*time.Second, false)

	f = Scrape(t, srv.URL)
	assert.Equal(t, 1.0, f.Value("kiln_provisioning_step_failures_total", "step", "addon:postgres"))
	assert.Equal(t, 1.0, f.Value("kiln_provisioning_step_failures_total", "step", "workspace"))
	assert.Equal(t, 2.0, f.Value("kiln_provisioning_step_failures_total", "step", "other"))
	assert.Equal(t, 4.0, f.Value("kiln_provisioning_step_failures_total"))
	n, sum := f.Hist("kiln_provisioning_step_duration_seconds", "step", "addon:postgres")
	assert.EqualValues(t, 1, n, "only the successful attempt is timed")
	assert.InDelta(t, 0.3, sum, 1e-9)
	n, _ = f.Hist("kiln_provisioning_step_duration_seconds", "step", "workspace")
	assert.Zero(t, n)
	n, _ = f.Hist("kiln_provisioning_step_duration_seconds", "step", "addon:mysql")
	assert.EqualValues(t, 1, n)
	n, _ = f.Hist("kiln_provisioning_step_duration_seconds")
	assert.EqualValues(t, 4, n)
	n, sum = f.Hist("kiln_provisioning_duration_seconds", "outcome", "ready")
	assert.EqualValues(t, 2, n)
	assert.InDelta(t, 42, sum, 1e-9)
	n, sum = f.Hist("kiln_provisioning_duration_seconds", "outcome", "failed")
	assert.EqualValues(t, 1, n)
	assert.InDelta(t, 8, sum, 1e-9)
	for _, v := range labelValues(f["kiln_provisioning_step_failures_total"], "step") {
		assert.NotContains(t, v, " ")
	}
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}
