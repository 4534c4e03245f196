// Package schema holds Kiln's contracts: the wire types bots and the runner
// speak (BuildSpec, BuildResult, statuses, events), the OpenAPI document, and
// the SQL migrations (embedded). It has no I/O of its own; the migrate entry
// point lives in schema/migrate so that importing the wire types stays cheap
// for the jobrunner.
package schema
