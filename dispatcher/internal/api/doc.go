// Package api is Kiln's HTTP interface: a chi router serving the REST API
// (schema/openapi.yaml; docs/design.md) and request logging, on the HTTP
// edge (package edge: problem answers, request ids, bearer-token auth, the
// strict decoder and each route's body limit). Other routers (event
// streams, the runner protocol, River's UI) mount on it.
// It holds no business rules of its own; intake and store do the work. The same
// router serves the long-running dispatcher and the Lambda front door.
package api
