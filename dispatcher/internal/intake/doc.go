// Package intake accepts builds and projects: it validates BuildSpecs, writes
// the audit row and the River dispatch job in one transaction (docs/design.md,
// invariant 1), honours Idempotency-Keys, and cancels pending builds. It
// speaks Go types, not HTTP, so the HTTP API and the Lambda front door share
// it. Submissions are written by a fixed pool of committers (group commit)
// that runs from Start to Stop.
//
// It also holds a submission's rules beyond the fields' own: the template's
// limits on max_turns and max_budget_usd, a review branch's name, fallback
// only on follow-ups (SubmitFollowup: a new build on a finished parent's
// project, with parent_id), and a template's monthly budget per project
// (MonthlyBudgetError once the month's spend reached it). It does not run
// builds, resume sessions or keep work: the launcher and the runner do.
package intake
