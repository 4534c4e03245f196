// Package edge is the HTTP edge every router of the dispatcher shares: the
// bots' API, the event streams, the runner protocol, River's UI and the
// Lambda front door. It holds, once each:
//
//   - the RFC 9457 problem+json writer (Write), which maps typed errors to
//     problem types, sends Retry-After with 429 and 503, never shows an
//     internal message (a 500 is logged with the request id instead), and
//     never waits for a body it refused;
//   - the request state (Requests): the request id and the principal;
//   - the authenticator middleware (Authenticate), with the Authorization
//     scheme matched case-insensitively (RFC 9110), and Principal to read
//     who a request acts as;
//   - the strict JSON decoder (Body): JSON and UTF-8 only, keys matched
//     exactly (encoding/json alone folds case), no unknown or repeated keys,
//     no NUL in strings, bounded depth and size per route, and an early 413
//     for a declared Content-Length over the route's limit;
//   - the parsing of ids in paths (PathID: canonical lowercase UUIDs only)
//     and of text headers (HeaderText).
//
// It is not a router and holds no business rules: it does not know which
// routes exist, who may see what (intake and the routers decide), or how a
// token is looked up (auth). Request logging and metrics stay with the API.
package edge
