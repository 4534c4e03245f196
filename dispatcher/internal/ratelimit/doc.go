// Package ratelimit keeps one client from crowding out the others: token
// buckets per API token (reads and writes apart) and per client address (for
// requests without a valid credential), answered 429 problem+json with
// Retry-After; and a cap on the event streams a token holds open, which also
// ends an open stream once its token stops working (Streams, the events
// handler's Guard).
//
// Limiter is the pure part: buckets keyed by a string, time from an injected
// clock, memory bounded by dropping buckets that refilled and, past MaxKeys,
// the ones idle longest. Limits and Streams put it on HTTP; they learn who a
// request is from a function (Options.Token), not from the auth package, and
// app wires them between the router and authentication.
//
// Limits are per process: with N replicas a token gets N times the rate.
// It does not authenticate, does not queue or delay requests (a refused
// request is answered at once), and does not limit the runner protocol's
// authenticated requests or the builds a project may run (the launcher's
// capacity does that). docs/limits.md is the operator's view.
package ratelimit
