// Package lambda serves the dispatcher's HTTP API from AWS Lambda: it turns a
// Function URL or API Gateway HTTP API (payload format 2.0) event into an
// *http.Request, runs it through the same chi router the serve command uses,
// and turns the answer back into the event's response. Open wires an
// insert-only app (no River workers, no cluster) with its database pool
// opened once per container, at cold start.
//
// It is not a way to run builds: the dispatchers in the cluster launch and
// track them. Live event streams (SSE, WebSocket) need a long-lived
// connection, so they are refused here with 501; the JSON event listing works.
package lambda
