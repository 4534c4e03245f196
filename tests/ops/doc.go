// Package ops tests the operations artifacts: the Prometheus alerting rules
// in deploy/prometheus (with promtool, from Debian's prometheus package,
// installed on first use when missing and running as root) and the Grafana
// dashboard in deploy/grafana, whose PromQL is parsed and whose metric names
// are checked against what a real dispatcher's /metrics exposes. Its only
// non-test code is the PromQL helpers those checks share with
// dispatcher/internal/metrics.
package ops
