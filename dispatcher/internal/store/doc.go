// Package store is Kiln's Postgres data layer: projects, the build audit trail,
// build events, API tokens, idempotency keys and callback attempts (and, from
// the audit trail, a build's follow-ups and a project's month spend). Every SQL
// statement the dispatcher runs lives here, including its reads of River's job
// table for metrics and the events listener's LISTEN. It knows nothing of HTTP
// or Kubernetes, nor of River beyond that table.
package store
