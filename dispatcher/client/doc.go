// Package client is a Go client of a dispatcher's REST API (schema/openapi.yaml):
// submit a build or a follow-up of one (retried safely under one
// Idempotency-Key), get, list and cancel builds, create projects, read a
// build's events and artifacts, follow its events live over Server-Sent
// Events or the WebSocket (Watch: resumed after disconnects, drops and server
// restarts, each event shown once, in order), and wait for a build to reach a status (Wait). Payloads are the
// schema package's types; an answer other than 2xx is an *APIError.
//
// It is for Go programs that drive Kiln: bots, the `dispatcher client`
// command line (dispatcher/internal/cli), and the tests and benchmarks under
// tests/ and dispatcher/internal. It is not the runner protocol (the
// jobrunner's own client speaks that), not a command line, and keeps no
// state between calls: a Client is a base URL, a token and an *http.Client.
// It never prints or logs the token.
package client
