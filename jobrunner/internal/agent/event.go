package agent

import "github.com/kilnbuild/kiln/schema"

// Kind names a normalized event.
type Kind string

const (
	// KindInit: the agent session started (Event.Init: session, model, version, mode, tools).
	KindInit Kind = "init"
	// KindText: text the agent wrote.
	KindText Kind = "text"
	// KindToolCall: the agent called a tool.
	KindToolCall Kind = "tool_call"
	// KindToolResult: a bounded summary of a tool's result.
	KindToolResult Kind = "tool_result"
	// KindRetry: a call to the model's API failed and the agent will retry it (Event.Retry).
	KindRetry Kind = "retry"
	// KindDenial: a tool call the agent was not allowed to make (Event.Denial). The run goes on.
	KindDenial Kind = "denial"
	// KindPushed: the agent itself pushed to a remote; Event.Text says what the CLI reported.
	KindPushed Kind = "pushed"
	// KindNotice: a message of the CLI itself, not of the model (Event.Notice): an
	// informational line, or the text the CLI puts in place of an answer when the API failed.
	KindNotice Kind = "notice"
	// KindUsage: tokens, turns and cost of the run (Claude reports them once, at the end;
	// without a result line they are summed from the agent's messages).
	KindUsage Kind = "usage"
	// KindFinal: how the run ended. A parser emits exactly one, as its last event, from End.
	KindFinal Kind = "final"
	// KindWarning: a line the parser could not read; the stream goes on.
	KindWarning Kind = "warning"
)

// Event is one normalized event of an agent run. Kind says which of the
// other fields is set.
type Event struct {
	Kind Kind
	// Text is the agent's text (KindText), what the CLI reported of a push
	// (KindPushed) or the warning (KindWarning).
	Text       string
	Init       *Init
	ToolCall   *ToolCall
	ToolResult *ToolResult
	Retry      *Retry
	Denial     *PermissionDenial
	Notice     *Notice
	Usage      *Usage
	Final      *Final
}

// Init describes the agent session as the agent reports it when it starts.
type Init struct {
	SessionID string
	Model     string
	// Version is the agent CLI's version ("2.1.328").
	Version string
	// PermissionMode is the permission mode in effect ("default", "acceptEdits", ...).
	PermissionMode string
	// Tools are the tools the agent offers the model.
	Tools []string
}

// Retry is the agent's announcement that a call to the model's API failed
// and that it will try again after DelayMS.
type Retry struct {
	// Attempt counts the retries, from 1; MaxRetries is how many the agent makes.
	Attempt, MaxRetries int
	DelayMS             int64
	// Status is the API's HTTP status; 0 when no answer came (a refused or
	// lost connection, a timeout).
	Status int
	// Error is the agent's name for the failure ("authentication_failed", "overloaded", ...).
	Error string
}

// Permanent reports whether retrying cannot help: the API refused the
// credentials (401, 403) or the request itself (400).
func (r Retry) Permanent() bool {
	switch r.Status {
	case 400, 401, 403:
		return true
	}
	return false
}

// Reason is the reason of a run that ends with this failure.
func (r Retry) Reason() schema.Reason { return apiReason(r.Status) }

// Notice is a message of the agent CLI itself.
type Notice struct {
	// Level is schema.LogInfo, LogWarn or LogError.
	Level string
	Text  string
}

// ToolCall is a tool invocation by the agent.
type ToolCall struct {
	ID   string
	Name string
	// Input is the tool's input as compact JSON, at most MaxSummaryBytes
	// (cut with a marker when longer).
	Input string
}

// ToolResult summarises what a tool returned to the agent.
type ToolResult struct {
	ToolUseID string
	// Summary is the result's text, at most MaxSummaryBytes.
	Summary string
	IsError bool
	// Truncated reports that Summary was cut; Size is the full text's length in bytes.
	Truncated bool
	Size      int
}

// Usage is the agent's accounting. InputTokens counts uncached input only;
// the cache fields count the rest of the prompt tokens.
type Usage struct {
	InputTokens              int64
	OutputTokens             int64
	CacheCreationInputTokens int64
	CacheReadInputTokens     int64
	Turns                    int
	CostUSD                  float64
}

// TotalInputTokens is every prompt token processed: uncached, cache writes and cache reads.
func (u Usage) TotalInputTokens() int64 {
	return u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

// Final says how the run ended.
type Final struct {
	// Success is true only when the agent reported success and no error,
	// and did not push itself.
	Success bool
	// Reason is why a failed run failed; empty on success.
	Reason schema.Reason
	// Subtype is the agent's own name for the ending ("success", "error_max_turns", ...);
	// empty when the stream ended without a result.
	Subtype string
	// TerminalReason is the agent's account of why it stopped ("completed",
	// "api_error", "prompt_too_long", "max_turns", ...); empty when unknown.
	TerminalReason string
	// APIStatus is the HTTP status of the model API's failure that ended the
	// run (from the result, or from the last retry when no result came); 0 when none.
	APIStatus int
	// Error explains a failure in one line; empty on success.
	Error string
	// Result is the agent's final text, whole.
	Result   string
	IsError  bool
	NumTurns int
	// TotalCostUSD is the agent's total: for a resumed Claude Code session,
	// its earlier runs' cost too. Usage.CostUSD is the run's own.
	TotalCostUSD float64
	DurationMS   int64
	// Usage is the result's; without a result, the sum over the agent's
	// messages (cost 0: the agent reports cost only in its result).
	Usage             Usage
	PermissionDenials []PermissionDenial
	// AgentPushed: the agent reported that it pushed to a remote itself.
	AgentPushed bool
	SessionID   string
}

// PermissionDenial is a tool call the agent was not allowed to make.
type PermissionDenial struct {
	ToolName  string
	ToolUseID string
	// Input is the denied call's input as compact JSON, bounded like ToolCall.Input.
	Input string
	// Reason is the agent's explanation of the denial; empty when it gave none.
	Reason string
}
