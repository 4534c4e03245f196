// Package client is `dispatcher client`: a command line for people and
// scripts that talks to a running dispatcher over its REST API (submit, get,
// list, cancel) and follows a build's events live (watch, over Server-Sent
// Events or the WebSocket), resuming after disconnects and exiting with the
// build's outcome. Settings come from flags, KILN_URL and KILN_TOKEN; the
// token is never printed.
//
// It is not a library for bots (they speak the REST API directly) and holds
// no state between runs.
package client
