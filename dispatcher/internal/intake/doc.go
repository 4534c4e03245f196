// Package intake accepts builds and projects: it validates BuildSpecs, writes
// the audit row and the River dispatch job in one transaction (docs/design.md,
// invariant 1), honours Idempotency-Keys, and cancels pending builds. It
// speaks Go types, not HTTP, so the HTTP API and the Lambda front door share
// it. Submissions are written by a fixed pool of committers (group commit)
// that runs from Start to Stop.
package intake
