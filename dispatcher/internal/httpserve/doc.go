// Package httpserve bounds what one client can hold of the dispatcher's HTTP
// server: the phases of a request (headers, body, response, idle keep-alive)
// each have a deadline, and a listener caps the connections served at once.
//
// The body and response deadlines are per request, set by Deadlines when the
// handler starts, because a server-wide ReadTimeout or WriteTimeout would
// also end long-lived event streams. A streaming handler calls Stream once it
// has authenticated the client; from then on it bounds each of its writes
// itself (package events does).
//
// At the connection cap a newcomer first closes an idle keep-alive
// connection, so clients that make one request and then sit on the
// connection cannot lock others out; with none idle it waits in the accept
// queue until one closes.
//
// It does not route, authenticate or decode requests; the routers do.
package httpserve
