package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// EventType names the kind of a build event, and so the type of its payload.
type EventType string

const (
	EventStatus     EventType = "status"      // StatusPayload: a status change, written by the dispatcher
	EventAgentText  EventType = "agent_text"  // AgentTextPayload: text the agent wrote
	EventToolCall   EventType = "tool_call"   // ToolCallPayload: the agent called a tool
	EventToolResult EventType = "tool_result" // ToolResultPayload: a summary of a tool's result
	EventUsage      EventType = "usage"       // UsagePayload: tokens, turns, cost
	EventGit        EventType = "git"         // GitPayload: the runner's git step
	EventLog        EventType = "log"         // LogPayload: a runner log line
	EventInfo       EventType = "info"        // InfoPayload: dispatcher notes (waiting for capacity, ...)

	EventAgentRetry       EventType = "agent_retry"       // AgentRetryPayload: the agent retries a failed API call
	EventPermissionDenied EventType = "permission_denied" // PermissionDeniedPayload: a tool call the agent was refused
)

// EventTypes lists every event type.
var EventTypes = []EventType{EventStatus, EventAgentText, EventToolCall, EventToolResult, EventUsage, EventGit, EventLog, EventInfo,
	EventAgentRetry, EventPermissionDenied}

// Event is one entry of a build's ordered event stream. Payload is the JSON
// of the payload type its Type names; Decode reads it.
type Event struct {
	Seq     int64           `json:"seq"`
	Type    EventType       `json:"type"`
	Time    time.Time       `json:"time"`
	Payload json.RawMessage `json:"payload"`
}

// Payload is the payload of one type of event. Every payload type below
// implements it; its JSON is what the event carries on the wire, and
// openapi.yaml declares the same shapes.
type Payload interface {
	// EventType is the type of the events that carry this payload.
	EventType() EventType
}

// StatusPayload is a status change. The dispatcher writes one in the same
// statement as the change itself, so a status event is the truth about the
// build's status at that sequence number.
type StatusPayload struct {
	Status Status `json:"status"`
	// Error says, for people, why the build failed or was cancelled. It is
	// present (empty) on every change but the first (pending) one.
	Error string `json:"error"`
	// Reason is the typed cause of a failure or a cancel; empty otherwise.
	Reason Reason `json:"reason,omitempty"`
}

// AgentTextPayload is text the agent wrote, whole.
type AgentTextPayload struct {
	Text string `json:"text"`
}

// ToolCallPayload is a tool call by the agent.
type ToolCallPayload struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name"`
	// Input is the tool's input as compact JSON, bounded (cut with a marker).
	Input string `json:"input,omitempty"`
}

// ToolResultPayload summarises what a tool returned to the agent.
type ToolResultPayload struct {
	ToolUseID string `json:"tool_use_id,omitempty"`
	// Summary is the result's text, bounded; Truncated says it was cut and
	// Size is the whole text's length in bytes.
	Summary   string `json:"summary"`
	IsError   bool   `json:"is_error"`
	Truncated bool   `json:"truncated"`
	Size      int    `json:"size"`
}

// UsagePayload is the agent's accounting of the run so far. InputTokens
// counts uncached input only; the cache fields count the rest of the prompt.
type UsagePayload struct {
	InputTokens              int64   `json:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
	Turns                    int     `json:"turns"`
	CostUSD                  float64 `json:"cost_usd"`
}

// GitPayload is what the runner's git step did after the agent: the files
// the build changed, and whether it committed and pushed them.
type GitPayload struct {
	FilesChanged []string `json:"files_changed"`
	Committed    bool     `json:"committed"`
	CommitSHA    string   `json:"commit_sha,omitempty"`
	Pushed       bool     `json:"pushed"`
	Error        string   `json:"error,omitempty"`
	// Branch is the branch CommitSHA is on when it is not the project's: the
	// build's review branch, or its kept-work branch (Kept).
	Branch string `json:"branch,omitempty"`
	// Kept reports that the commit keeps the work of a build that failed or
	// was cancelled, on Branch (KeptWorkBranch), never the project branch.
	Kept bool `json:"kept,omitempty"`
}

// Log levels of LogPayload.
const (
	LogInfo  = "info"
	LogWarn  = "warn"
	LogError = "error"
)

// AgentRetryPayload says the agent's call to the model's API failed and
// the agent will try again: a watcher sees why the build waits.
type AgentRetryPayload struct {
	// Attempt counts the retries so far, from 1; MaxRetries is how many the
	// agent will make.
	Attempt    int `json:"attempt"`
	MaxRetries int `json:"max_retries"`
	// DelayMS is how long the agent waits before this retry.
	DelayMS int64 `json:"delay_ms"`
	// Status is the API's HTTP status; 0 when no answer came (a lost
	// connection, a timeout).
	Status int `json:"status"`
	// Error is the agent's name for the failure ("authentication_failed",
	// "overloaded", "rate_limit", "server_error", "unknown", ...).
	Error string `json:"error"`
}

// PermissionDeniedPayload is a tool call the agent was not allowed to make.
// The run goes on; the build's result lists every denial.
type PermissionDeniedPayload struct {
	// ToolUseID ties the denial to its tool_call event.
	ToolUseID string `json:"tool_use_id,omitempty"`
	Tool      string `json:"tool"`
	// Summary is a short, bounded account of the call's input: the Bash
	// command, the file path, the URL.
	Summary string `json:"summary"`
	// Reason is the agent's explanation of the denial, bounded.
	Reason string `json:"reason"`
}

// LogPayload is a runner log line: what the runner did (started, finished,
// artifacts skipped), and the agent session's start and end, which fill the
// optional fields.
type LogPayload struct {
	Level   string `json:"level"` // LogInfo, LogWarn or LogError
	Message string `json:"message"`
	// The agent session's start: its first event says which agent runs
	// (AgentVersion, e.g. Claude Code's "2.1.328"), the model, the
	// permission mode in effect and the tools the agent offers the model.
	SessionID      string   `json:"session_id,omitempty"`
	Model          string   `json:"model,omitempty"`
	AgentVersion   string   `json:"agent_version,omitempty"`
	PermissionMode string   `json:"permission_mode,omitempty"`
	Tools          []string `json:"tools,omitempty"`
	// The end of the agent's run or of the build.
	Success           *bool    `json:"success,omitempty"`
	Subtype           string   `json:"subtype,omitempty"`
	Error             string   `json:"error,omitempty"`
	NumTurns          int      `json:"num_turns,omitempty"`
	PermissionDenials []string `json:"permission_denials,omitempty"` // names of the tools denied
}

// InfoPayload is a note by the dispatcher, such as why a build still waits.
type InfoPayload struct {
	Message string `json:"message"`
	// WaitingReason is set on the note of a pending build whose reason for
	// waiting changed; QueuePosition is its place in its project's queue then.
	WaitingReason WaitingReason `json:"waiting_reason,omitempty"`
	QueuePosition int           `json:"queue_position,omitempty"`
}

func (StatusPayload) EventType() EventType           { return EventStatus }
func (AgentTextPayload) EventType() EventType        { return EventAgentText }
func (ToolCallPayload) EventType() EventType         { return EventToolCall }
func (ToolResultPayload) EventType() EventType       { return EventToolResult }
func (UsagePayload) EventType() EventType            { return EventUsage }
func (GitPayload) EventType() EventType              { return EventGit }
func (LogPayload) EventType() EventType              { return EventLog }
func (InfoPayload) EventType() EventType             { return EventInfo }
func (AgentRetryPayload) EventType() EventType       { return EventAgentRetry }
func (PermissionDeniedPayload) EventType() EventType { return EventPermissionDenied }

// ErrUnknownEventType is returned when decoding the payload of an event
// type this version of schema does not know.
var ErrUnknownEventType = errors.New("unknown event type")

// NewEventInput returns p as an event the runner reports at time t.
func NewEventInput(t time.Time, p Payload) (EventInput, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return EventInput{}, fmt.Errorf("encoding a %s event: %w", p.EventType(), err)
	}
	return EventInput{Type: p.EventType(), Time: t, Payload: b}, nil
}

// DecodePayload reads the payload of an event of type t: a StatusPayload for
// EventStatus, an AgentTextPayload for EventAgentText, and so on. Fields it
// does not know are ignored; an unknown type is ErrUnknownEventType.
func DecodePayload(t EventType, raw json.RawMessage) (Payload, error) {
	switch t {
	case EventStatus:
		return decode[StatusPayload](raw)
	case EventAgentText:
		return decode[AgentTextPayload](raw)
	case EventToolCall:
		return decode[ToolCallPayload](raw)
	case EventToolResult:
		return decode[ToolResultPayload](raw)
	case EventUsage:
		return decode[UsagePayload](raw)
	case EventGit:
		return decode[GitPayload](raw)
	case EventLog:
		return decode[LogPayload](raw)
	case EventInfo:
		return decode[InfoPayload](raw)
	case EventAgentRetry:
		return decode[AgentRetryPayload](raw)
	case EventPermissionDenied:
		return decode[PermissionDeniedPayload](raw)
	}
	return nil, fmt.Errorf("event type %q: %w", t, ErrUnknownEventType)
}

func decode[P Payload](raw json.RawMessage) (Payload, error) {
	var p P
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("reading a %s payload: %w", p.EventType(), err)
	}
	return p, nil
}

// Decode reads e's payload as the type e.Type names (see DecodePayload).
func (e Event) Decode() (Payload, error) { return DecodePayload(e.Type, e.Payload) }

// Decode reads e's payload as the type e.Type names (see DecodePayload).
func (e EventInput) Decode() (Payload, error) { return DecodePayload(e.Type, e.Payload) }

// PayloadAs returns e's payload as P when e is an event of P's type (and its
// payload is readable); otherwise ok is false. Other events' payloads are
// not read:
//
//	if s, ok := schema.PayloadAs[schema.StatusPayload](e); ok && s.Status.Terminal() { ... }
func PayloadAs[P Payload](e Event) (p P, ok bool) {
	if e.Type != p.EventType() {
		return p, false
	}
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		var zero P
		return zero, false
	}
	return p, true
}

// WebSocket close codes of GET /builds/{id}/events/ws, shared by the server
// and its clients. The close reason that goes with them is text for people;
// clients learn nothing from it. After any code but CloseBuildEnded a
// client reconnects with ?after= the last sequence number it received.
const (
	// CloseBuildEnded (normal closure): the build is terminal and every
	// event up to its terminal status event was sent.
	CloseBuildEnded = 1000
	// CloseGoingAway: the server is shutting down; another replica serves
	// the reconnect.
	CloseGoingAway = 1001
	// CloseInternalError: the server failed to read or send the events.
	CloseInternalError = 1011
	// CloseSlowConsumer: the client fell too far behind the build's events
	// and was dropped so that it cannot grow the server's memory.
	CloseSlowConsumer = 4000
	// CloseTokenInvalid (policy violation): the token the stream was opened
	// with stopped working (it was revoked); a reconnect needs a valid one.
	CloseTokenInvalid = 1008
)

// The Server-Sent Events stream of GET /builds/{id}/events sends each event
// as "id: <seq>", "event: <type>", "data: <Event>", and ends with one of
// these, whose data is the type named beside it.
const (
	SSEEnd     = "end"     // StreamEnd: the build is terminal and every event was sent
	SSEDropped = "dropped" // StreamDropped: the client fell too far behind
	// SSEUnauthorized (data StreamDropped): the token the stream was opened
	// with stopped working (it was revoked); a reconnect needs a valid one.
	SSEUnauthorized = "unauthorized"
)

// StreamEnd is the data of the SSEEnd event.
type StreamEnd struct {
	Status  Status `json:"status"`
	LastSeq int64  `json:"last_seq"`
}

// StreamDropped is the data of the SSEDropped event: reconnect with
// Last-Event-ID: ResumeAfter.
type StreamDropped struct {
	Reason      string `json:"reason"`
	ResumeAfter int64  `json:"resume_after"`
}
