// Package events streams a build's events to clients: a JSON page, Server-Sent
// Events and a WebSocket on GET /builds/{taskId}/events[/ws], replayed from any
// sequence number and then followed live.
//
// Fan-out across dispatcher replicas goes through Postgres: a trigger on
// build_events sends NOTIFY kiln_events; each process holds one LISTEN
// connection (Hub), opened when the first stream subscribes, and a
// notification only wakes the build's feed, which reads the new rows from
// build_events once and hands them to the process's subscribers through
// bounded buffers. A subscriber that falls a whole buffer
// behind is dropped with a close reason that says where to resume, so a slow
// client cannot grow the server's memory. After losing its connection the
// listener reconnects and re-reads every followed build: notifications are a
// wake-up, never the data.
//
// It does not write events; the dispatcher's status changes and the runner
// protocol do (package store).
package events
