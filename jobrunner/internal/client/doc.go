// Package client is the runner's side of the runner protocol
// (schema.RunnerAPIPrefix): it fetches the build's RunnerTask, posts event
// batches and posts the BuildResult, authenticated with the build's runner
// token as a Bearer token.
//
// Every call retries network errors, 5xx and 429 with exponential backoff
// and jitter until its context ends; other 4xx answers are final and not
// retried. A 409 means the build is already terminal: PostResult reports it
// as a ResultAck with Accepted false, the other calls as ErrBuildTerminal.
// A post past one of the build's per-build caps is ErrCapReached (and
// ErrRejected); a 401 after the build ended is ErrRejected.
//
// It is not a general HTTP client and knows nothing of the dispatcher's
// public API; it never logs the token.
package client
