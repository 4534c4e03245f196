// Package store is Kiln's Postgres data layer: projects, the build audit trail,
// build events, API tokens and idempotency keys. Every SQL statement the
// dispatcher runs against its own tables lives here. It knows nothing of HTTP,
// River or Kubernetes.
package store
