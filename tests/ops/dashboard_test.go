package ops

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const root = "../.."

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Panels     []panel         `json:"panels"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy/grafana/kiln-dashboard.json"))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardQueries returns every PromQL expression of the dashboard by
// where it is, and the metrics its label_values variables read.
func dashboardQueries(t *testing.T, d dashboard) (exprs map[string]string, varMetrics []string) {
	t.Helper()
	exprs = map[string]string{}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			exprs[p.Title+" / "+tg.RefID] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		m := LabelValuesQuery.FindStringSubmatch(q)
		require.NotNil(t, m, "variable %s: only label_values(metric, label) queries are checked: %q", v.Name, q)
		varMetrics = append(varMetrics, m[1])
	}
	return exprs, varMetrics
}

// The dashboard is well formed: unique ids, every query panel on the
// datasource variable, and the panels the issue asks for.
func TestDashboardShape(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	assert.Equal(t, "kiln-dispatcher", d.UID)
	ids := map[int]bool{}
	var titles []string
	for _, p := range allPanels(d.Panels) {
		assert.False(t, ids[p.ID], "panel id %d is unique", p.ID)
		ids[p.ID] = true
		titles = append(titles, strings.ToLower(p.Title))
		if p.Type == "row" {
			continue
		}
		assert.NotEmpty(t, p.Targets, "panel %q has queries", p.Title)
		assert.Contains(t, string(p.Datasource), "${datasource}", "panel %q uses the datasource variable", p.Title)
		for _, tg := range p.Targets {
			assert.NotEmpty(t, tg.RefID, "panel %q", p.Title)
		}
	}
	for _, want := range []string{"river jobs waiting", "builds finished per minute", "p50 / p95", "outcomes",
		"failures by reason", "callback attempts", "cost per hour"} {
		assert.True(t, slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, want) }), "a panel about %q", want)
	}
}

// Every PromQL expression of the dashboard parses once Grafana's variables
// are in. (dispatcher/internal/metrics checks the metric names they read
// against a real /metrics.)
func TestDashboardQueriesParse(t *testing.T) {
	t.Parallel()
	exprs, varMetrics := dashboardQueries(t, loadDashboard(t))
	require.NotEmpty(t, exprs)
	require.NotEmpty(t, varMetrics)
	for where, expr := range exprs {
		q, err := Interpolate(expr)
		if assert.NoError(t, err, where) {
			_, err = MetricNames(q)
			assert.NoError(t, err, "%s: %s", where, q)
		}
	}
}
