// Package intake accepts builds and projects: it validates BuildSpecs, writes
// the audit row and the River dispatch job in one transaction (invariant 1),
// honours Idempotency-Keys, and cancels pending builds. It speaks Go types, not
// HTTP, so the HTTP API and the Lambda front door share it.
package intake
