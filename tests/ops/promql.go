package ops

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// grafanaVars are the dashboard's variables as a query sees them once Grafana
// has interpolated them.
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "5m", "$__rate_interval", "5m",
	"${__range}", "6h", "$__range", "6h",
	"${__interval}", "1m", "$__interval", "1m",
	"${template:regex}", ".*", "${template}", ".*", "$template", ".*",
)

// Interpolate replaces Grafana's variables; a variable it does not know is an error.
func Interpolate(expr string) (string, error) {
	out := grafanaVars.Replace(expr)
	if strings.Contains(out, "$") {
		return "", fmt.Errorf("unknown variable in %q", expr)
	}
	return out, nil
}

// MetricNames parses a PromQL expression and returns the metric names its
// selectors read.
func MetricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			err = fmt.Errorf("%q: a selector without a metric name", expr)
		}
		names = append(names, name)
		return nil
	})
	return names, err
}

// LabelValuesQuery matches a Grafana variable query label_values(metric, label).
var LabelValuesQuery = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$`)
