package agent

// Kind names a normalized event.
type Kind string

const (
	// KindInit: the agent session started (model, session id).
	KindInit Kind = "init"
	// KindText: text the agent wrote.
	KindText Kind = "text"
	// KindToolCall: the agent called a tool.
	KindToolCall Kind = "tool_call"
	// KindToolResult: a bounded summary of a tool's result.
	KindToolResult Kind = "tool_result"
	// KindUsage: tokens, turns and cost of the run so far (Claude reports them once, at the end).
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
	// Text is the agent's text (KindText) or the warning (KindWarning).
	Text       string
	Init       *Init
	ToolCall   *ToolCall
	ToolResult *ToolResult
	Usage      *Usage
	Final      *Final
	Retry      *Retry            // TEMPORARY stub field (helper C); helper B's event.go has it
	Denial     *PermissionDenial // TEMPORARY stub field (helper C); helper B's event.go has it
}

// Init describes the agent session.
type Init struct {
	SessionID string
	Model     string
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
	// Success is true only when the agent reported success and no error.
	Success bool
	// Subtype is the agent's own name for the ending ("success", "error_max_turns", ...);
	// empty when the stream ended without a result.
	Subtype string
	// Error explains a failure in one line; empty on success.
	Error string
	// Result is the agent's final text, whole.
	Result            string
	IsError           bool
	NumTurns          int
	TotalCostUSD      float64
	DurationMS        int64
	Usage             Usage
	PermissionDenials []PermissionDenial
}

// PermissionDenial is a tool call the agent was not allowed to make.
type PermissionDenial struct {
	ToolName  string
	ToolUseID string
	// Input is the denied call's input as compact JSON, bounded like ToolCall.Input.
	Input string
}
