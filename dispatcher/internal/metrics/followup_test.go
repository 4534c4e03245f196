package metrics_test

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/metrics"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	kiln "github.com/kilnbuild/kiln/schema"
)

// Follow-ups accepted through the API are counted by fallback (a replay
// not); a budget stop, kept work and the spend by project come from the
// builds' results.
func TestFollowupBudgetAndSpendMetrics(t *testing.T) {
	e := setup(t)
	f := Scrape(t, e.srv.URL)
	assert.Equal(t, 0.0, f.Value("kiln_followups_total", "fallback", "none"), "both series from 0")
	assert.Contains(t, labelValues(f["kiln_followups_total"], "fallback"), "fresh")

	stopped := e.submit(map[string]any{"prompt": "p"})
	e.running(stopped)
	e.result(stopped, kiln.BuildResult{Reason: kiln.ReasonBudgetExceeded, Error: "spent $2.01 of $2",
		PartialBranch: kiln.KeptWorkBranch(stopped), PartialCommitSHA: "abc", Usage: &kiln.Usage{CostUSD: 2.01}})
	done := e.submit(map[string]any{"prompt": "p"})
	e.running(done)
	e.result(done, kiln.BuildResult{Success: true, Usage: &kiln.Usage{CostUSD: 0.5}})
	failed := e.submit(map[string]any{"prompt": "p"})
	e.running(failed)
	e.result(failed, kiln.BuildResult{Reason: kiln.ReasonAgentError, Error: "x"}) // nothing kept, no cost

	var acc kiln.BuildAccepted
	e.post("/builds/"+stopped+"/followups", map[string]any{"prompt": "go on"}, http.StatusAccepted, &acc)
	e.post("/builds/"+done+"/followups", map[string]any{"prompt": "again", "fallback": "fresh"}, http.StatusAccepted, nil)
	e.post("/builds/"+acc.TaskID+"/followups", map[string]any{"prompt": "too soon"}, http.StatusConflict, nil)

	f = Scrape(t, e.srv.URL)
	assert.Equal(t, 1.0, f.Value("kiln_followups_total", "fallback", "none"))
	assert.Equal(t, 1.0, f.Value("kiln_followups_total", "fallback", "fresh"))
	assert.Equal(t, 1.0, f.Value("kiln_budget_stops_total"))
	assert.Equal(t, 1.0, f.Value("kiln_builds_total", "reason", "budget_exceeded"), "the runner's reason is kept")
	assert.Equal(t, 1.0, f.Value("kiln_kept_work_total"))
	assert.InDelta(t, 2.51, f.Value("kiln_spend_usd_total", "project", e.project), 1e-9)
	assert.Equal(t, []string{e.project}, labelValues(f["kiln_spend_usd_total"], "project"), "one series a project")
}

// Kept work is counted for failed and cancelled builds only; a completed
// build's partial branch (which no runner sends) is not kept work.
func TestKeptWorkOutcomes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registry: reg})
	require.NoError(t, err)
	kept := &kiln.BuildResult{PartialBranch: "kiln/x"}
	for _, b := range []kiln.Build{
		{Status: kiln.StatusFailed, Reason: kiln.ReasonMaxTurns, Result: kept},
		{Status: kiln.StatusCancelled, Reason: kiln.ReasonCancelled, Result: kept},
		{Status: kiln.StatusCompleted, Result: kept},
		{Status: kiln.StatusFailed, Reason: kiln.ReasonDeadline, Result: &kiln.BuildResult{}},
		{Status: kiln.StatusFailed, Reason: kiln.ReasonBudgetExceeded},
		{Status: kiln.StatusRunning, Result: kept},
	} {
		m.Transition(&store.Build{Build: b})
	}
	f := gather(t, reg)
	assert.Equal(t, 2.0, f.Value("kiln_kept_work_total"))
	assert.Equal(t, 1.0, f.Value("kiln_budget_stops_total"))
}

func gather(t *testing.T, reg *prometheus.Registry) Families {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	f := Families{}
	for _, mf := range mfs {
		f[mf.GetName()] = mf
	}
	return f
}
