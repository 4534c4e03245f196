// Package events posts a build's events to the dispatcher in ordered
// batches: numbered from 1 without gaps, one batch in flight at a time, a
// failed batch retried as it was (same number, same events) so the
// dispatcher stores it once. An acknowledgement whose status is terminal
// (the build was cancelled) is surfaced through Terminal, so the runner can
// stop the agent. Answers that are final end posting for good, without
// retries: a 409 (the build ended; also surfaced through Terminal), a
// per-build event cap (the build goes on without more events), a 401, 403
// or 404. Another refused batch is dropped and its number used again.
//
// It does not decide what the events say; the runner builds them.
package events
