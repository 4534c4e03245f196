package metrics_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"sigs.k8s.io/yaml"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/ops"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/metrics"
	"github.com/kilnbuild/kiln/schema"
)

// prometheusSynthetic are series Prometheus itself adds to every target.
var prometheusSynthetic = map[string]bool{"up": true, "scrape_duration_seconds": true,
	"scrape_samples_scraped": true, "scrape_series_added": true, "scrape_samples_post_metric_relabeling": true}

// exposedNames starts a dispatcher in-process on a fresh schema, takes one
// build through its whole life (so labelled histograms have series), scrapes
// /metrics and returns every series name it exposes, histograms' _bucket,
// _sum and _count included.
func exposedNames(t *testing.T) map[string]bool {
	t.Helper()
	env := apptest.New(t, app.Options{Workers: 1, Registry: prometheus.NewRegistry()})
	a, srv := env.App, env.Server
	ctx := context.Background()
	id := env.Pending(env.Project("web").ID, schema.BuildSpec{Prompt: "p"})
	b, err := a.Lifecycle.Start(ctx, id, "j")
	require.NoError(t, err)
	a.Metrics.Launch(b, 100*time.Millisecond, "") // no cluster here: the launcher's hook by hand
	_, err = a.Lifecycle.Finish(ctx, id, schema.BuildResult{Success: true,
		Usage: &schema.Usage{CostUSD: 0.1, Turns: 2, InputTokens: 10, OutputTokens: 2}}, "test")
	require.NoError(t, err)

	// One answered request first, so the HTTP series exist in the scrape
	// (a request is counted once it has been answered).
	hz, err := http.Get(srv.URL + "/healthz")
	require.NoError(t, err)
	hz.Body.Close()
	res, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	names := map[string]bool{}
	for name, mf := range fams {
		names[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	require.Contains(t, names, "kiln_build_duration_seconds_bucket", "the build's histograms are exposed")
	return names
}

// root is the repository's root, from this package.
const root = "../../.."

// deployQueries returns every PromQL expression of the Grafana dashboard and
// of the alerting rules by where it is, and the metrics the dashboard's
// label_values variables read.
func deployQueries(t *testing.T) (exprs map[string]string, varMetrics []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy/grafana/kiln-dashboard.json"))
	require.NoError(t, err)
	type panel struct {
		Title   string            `json:"title"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(b, &d))
	exprs = map[string]string{}
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p panel
			require.NoError(t, json.Unmarshal(raw, &p))
			for _, tg := range p.Targets {
				exprs["panel "+p.Title+" / "+tg.RefID] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		m := ops.LabelValuesQuery.FindStringSubmatch(q)
		require.NotNil(t, m, "variable %s: only label_values(metric, label) queries are checked: %q", v.Name, q)
		varMetrics = append(varMetrics, m[1])
	}

	b, err = os.ReadFile(filepath.Join(root, "deploy/prometheus/kiln-rules.yaml"))
	require.NoError(t, err)
	var pr struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert  string `json:"alert"`
					Record string `json:"record"`
					Expr   string `json:"expr"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(b, &pr))
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			exprs["rule "+r.Alert+r.Record] = r.Expr
		}
	}
	return exprs, varMetrics
}

// Every PromQL expression of the Grafana dashboard (deploy/grafana) and of
// the alerting rules (deploy/prometheus) parses, and every metric it reads is
// one a real dispatcher exposes; every kiln_ metric is read by one of them.
func TestQueriesUseExposedMetrics(t *testing.T) {
	t.Parallel()
	exposed := exposedNames(t)
	exprs, varMetrics := deployQueries(t)
	require.NotEmpty(t, exprs)
	used := map[string]bool{}
	for where, expr := range exprs {
		q, err := ops.Interpolate(expr)
		if !assert.NoError(t, err, where) {
			continue
		}
		names, err := ops.MetricNames(q)
		if !assert.NoError(t, err, "%s: %s", where, q) {
			continue
		}
		for _, n := range names {
			used[n] = true
			assert.True(t, exposed[n] || prometheusSynthetic[n], "%s reads %s, which /metrics does not expose", where, n)
		}
	}
	for _, n := range varMetrics {
		assert.True(t, exposed[n], "a dashboard variable reads %s, which /metrics does not expose", n)
	}
	// And the other way round: the dashboard shows every kiln_ metric.
	for n := range exposed {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if !strings.HasPrefix(n, "kiln_") || n != base && exposed[base] {
			continue
		}
		if n == "kiln_queue_stats_age_seconds" {
			continue // diagnostics, not for a dashboard
		}
		found := used[n]
		for u := range used {
			found = found || strings.HasPrefix(u, n+"_")
		}
		assert.True(t, found, "%s is exposed but neither the dashboard nor an alert reads it", n)
	}
}

// docs/metrics.md's table of provisioning steps lists exactly the step
// label values every series starts with.
func TestProvisionStepsDocumented(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(root, "docs/metrics.md"))
	require.NoError(t, err)
	doc := string(b)
	start := strings.Index(doc, "## Provisioning steps")
	require.GreaterOrEqual(t, start, 0, "docs/metrics.md has a Provisioning steps section")
	section := doc[start+1:]
	section = section[:strings.Index(section, "\n## ")]
	var documented []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `") {
			documented = append(documented, strings.Trim(strings.SplitN(line, "|", 3)[1], " `"))
		}
	}
	assert.ElementsMatch(t, metrics.ProvisionSteps, documented)
}
