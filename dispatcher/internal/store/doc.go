// Package store is Kiln's Postgres data layer: projects, the build audit trail,
// build events, API tokens, idempotency keys and callback attempts. Every SQL
// statement the dispatcher runs lives here, including its reads of River's job
// table for metrics and the events listener's LISTEN. It knows nothing of HTTP
// or Kubernetes, nor of River beyond that table.
package store
