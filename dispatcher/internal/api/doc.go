// Package api is Kiln's HTTP interface: a chi router serving the REST API
// (schema/openapi.yaml; docs/design.md), RFC 9457 problem answers,
// bearer-token auth and request logging.
// It holds no business rules of its own; intake and store do the work. The same
// router serves the long-running dispatcher and the Lambda front door.
package api
