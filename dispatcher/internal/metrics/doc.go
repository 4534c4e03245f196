// Package metrics is the dispatcher's Prometheus instrumentation: counters
// and histograms fed by hooks on the lifecycle, launcher, watcher and
// callback worker, and a collector that reads queue and in-flight figures
// from Postgres at most once per CacheTTL, so a scrape stays cheap however
// many River jobs there are. Everything lives on an injected registry, never
// on the global default one.
//
// It does not decide anything: it only observes. The names, labels and
// alerts built on them are documented in docs/metrics.md.
package metrics
