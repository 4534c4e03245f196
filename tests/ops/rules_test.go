package ops

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/kilnbuild/kiln/schema"
)

var update = flag.Bool("update", false, "rewrite deploy/prometheus/kiln-rules.promtool.yaml from kiln-rules.yaml")

var (
	rulesFile    = filepath.Join(root, "deploy/prometheus/kiln-rules.yaml")
	promtoolFile = filepath.Join(root, "deploy/prometheus/kiln-rules.promtool.yaml")
	rulesTest    = filepath.Join(root, "deploy/prometheus/kiln-rules.test.yaml")
)

const promtoolHeader = `# Generated from kiln-rules.yaml (its spec): the plain rules-file form for
# promtool and a Prometheus without the operator. tests/ops checks they agree;
# regenerate with: go test ./tests/ops -run TestRulesInSync -update
`

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

func (g ruleGroups) rules() []rule {
	var out []rule
	for _, gr := range g.Groups {
		out = append(out, gr.Rules...)
	}
	return out
}

type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec map[string]any `json:"spec"`
}

func loadRules(t *testing.T) ruleGroups {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	var pr struct {
		Spec ruleGroups `json:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(b, &pr), rulesFile)
	require.NotEmpty(t, pr.Spec.rules())
	return pr.Spec
}

var (
	promtoolOnce sync.Once
	promtoolPath string
	promtoolErr  error
)

// promtool returns the promtool binary, installing Debian's prometheus
// package first when it is missing and the test runs as root (as CI does).
func promtool(t *testing.T) string {
	t.Helper()
	promtoolOnce.Do(func() {
		if promtoolPath, promtoolErr = exec.LookPath("promtool"); promtoolErr == nil {
			return
		}
		if os.Geteuid() != 0 {
			promtoolErr = errors.New("promtool is missing: apt-get install prometheus (Debian's package provides it), or run make promtool as root")
			return
		}
		for _, args := range [][]string{{"apt-get", "update"}, {"apt-get", "install", "-y", "--no-install-recommends", "prometheus"}} {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				promtoolErr = errors.New(strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out))
				return
			}
		}
		promtoolPath, promtoolErr = exec.LookPath("promtool")
	})
	require.NoError(t, promtoolErr)
	return promtoolPath
}

func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

// kiln-rules.yaml is a PrometheusRule, and kiln-rules.promtool.yaml holds
// exactly its spec.
func TestRulesInSync(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	var pr prometheusRule
	require.NoError(t, yaml.Unmarshal(b, &pr))
	assert.Equal(t, "monitoring.coreos.com/v1", pr.APIVersion)
	assert.Equal(t, "PrometheusRule", pr.Kind)
	assert.Equal(t, "kiln", pr.Metadata.Namespace)
	assert.NotEmpty(t, pr.Metadata.Name)
	if *update {
		out, err := yaml.Marshal(pr.Spec)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(promtoolFile, append([]byte(promtoolHeader), out...), 0o644))
	}
	pb, err := os.ReadFile(promtoolFile)
	require.NoError(t, err)
	var plain map[string]any
	require.NoError(t, yaml.Unmarshal(pb, &plain))
	if diff := cmp.Diff(pr.Spec, plain); diff != "" {
		t.Errorf("kiln-rules.promtool.yaml differs from kiln-rules.yaml's spec (-spec +promtool); run go test ./tests/ops -run TestRulesInSync -update:\n%s", diff)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	t.Parallel()
	out := runPromtool(t, "check", "rules", promtoolFile)
	assert.Contains(t, out, "SUCCESS")
}

func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	out := runPromtool(t, "test", "rules", rulesTest)
	assert.Contains(t, out, "SUCCESS")
}

// Every alert has a unit test where it fires and one where it stays quiet.
func TestEveryAlertIsTested(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(rulesTest)
	require.NoError(t, err)
	var tf struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			Name           string `json:"name"`
			AlertRuleTests []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(b, &tf))
	assert.Equal(t, []string{"kiln-rules.promtool.yaml"}, tf.RuleFiles)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTests {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range loadRules(t).rules() {
		if r.Alert == "" {
			continue
		}
		assert.True(t, fires[r.Alert], "%s has a test where it fires", r.Alert)
		assert.True(t, quiet[r.Alert], "%s has a test where it stays quiet", r.Alert)
	}
}

var heading = regexp.MustCompile(`(?m)^#+\s+(.+)$`)

// githubSlug is the anchor GitHub gives a Markdown heading.
func githubSlug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Every alert is severe or not, says what and why, and links to a section of
// docs/metrics.md that exists; every expression parses.
func TestAlertsAreDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join(root, "docs/metrics.md"))
	require.NoError(t, err)
	anchors := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(string(doc), -1) {
		anchors[githubSlug(m[1])] = true
	}
	for _, r := range loadRules(t).rules() {
		_, err := MetricNames(r.Expr)
		assert.NoError(t, err, r.Alert)
		assert.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
		assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
		assert.NotEmpty(t, r.Annotations["description"], r.Alert)
		url := r.Annotations["runbook_url"]
		i := strings.LastIndex(url, "#")
		if assert.True(t, strings.HasSuffix(url[:max(i, 0)], "docs/metrics.md"), "%s: runbook_url %q", r.Alert, url) {
			assert.True(t, anchors[url[i+1:]], "%s: docs/metrics.md has no section #%s", r.Alert, url[i+1:])
		}
		assert.Contains(t, string(doc), r.Alert, "docs/metrics.md names %s", r.Alert)
	}
}

// Every failure reason has its own section in docs/metrics.md (the
// reason label of kiln_builds_total and the alerts link there).
func TestReasonsAreDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join(root, "docs/metrics.md"))
	require.NoError(t, err)
	sections := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^####\s+(\S+)\s*$`).FindAllStringSubmatch(string(doc), -1) {
		sections[m[1]] = true
	}
	for _, r := range schema.FailureReasons {
		assert.True(t, sections[string(r)], "docs/metrics.md has no #### %s section", r)
	}
}
