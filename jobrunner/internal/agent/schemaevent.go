package agent

import (
	"encoding/json"
	"fmt"

	"github.com/kilnbuild/kiln/schema"
)

// Payloads of the schema events SchemaEvent produces. Their JSON field
// names are what event consumers (SSE, WebSocket, audit) see.
type (
	TextPayload struct {
		Text string `json:"text"`
	}
	ToolCallPayload struct {
		ID    string `json:"id,omitempty"`
		Name  string `json:"name"`
		Input string `json:"input,omitempty"`
	}
	ToolResultPayload struct {
		ToolUseID string `json:"tool_use_id,omitempty"`
		Summary   string `json:"summary"`
		IsError   bool   `json:"is_error"`
		Truncated bool   `json:"truncated"`
		Size      int    `json:"size"`
	}
	UsagePayload struct {
		InputTokens              int64   `json:"input_tokens"`
		OutputTokens             int64   `json:"output_tokens"`
		CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
		Turns                    int     `json:"turns"`
		CostUSD                  float64 `json:"cost_usd"`
	}
	// LogPayload carries init, final and warning events as runner log lines.
	LogPayload struct {
		Level   string `json:"level"`
		Message string `json:"message"`
		// Set on the init event.
		SessionID string `json:"session_id,omitempty"`
		Model     string `json:"model,omitempty"`
		// Set on the final event.
		Success           *bool    `json:"success,omitempty"`
		Subtype           string   `json:"subtype,omitempty"`
		Error             string   `json:"error,omitempty"`
		NumTurns          int      `json:"num_turns,omitempty"`
		PermissionDenials []string `json:"permission_denials,omitempty"`
	}
)

// SchemaEvent maps a normalized event onto a schema event type and a small
// JSON payload: text → agent_text, tool calls → tool_call, tool results →
// tool_result (summary bounded to MaxSummaryBytes), usage → usage; init,
// final and warnings → log. Text is carried whole. Seq and Time are the
// caller's.
func SchemaEvent(e Event) (schema.EventType, json.RawMessage, error) {
	var (
		t schema.EventType
		p any
	)
	switch {
	case e.Kind == KindText:
		t, p = schema.EventAgentText, TextPayload{Text: e.Text}
	case e.Kind == KindToolCall && e.ToolCall != nil:
		c := e.ToolCall
		in, _ := Truncate(c.Input, MaxSummaryBytes)
		t, p = schema.EventToolCall, ToolCallPayload{ID: c.ID, Name: c.Name, Input: in}
	case e.Kind == KindToolResult && e.ToolResult != nil:
		r := e.ToolResult
		sum, cut := Truncate(r.Summary, MaxSummaryBytes)
		t, p = schema.EventToolResult, ToolResultPayload{
			ToolUseID: r.ToolUseID, Summary: sum, IsError: r.IsError,
			Truncated: r.Truncated || cut, Size: max(r.Size, len(r.Summary)),
		}
	case e.Kind == KindUsage && e.Usage != nil:
		u := e.Usage
		t, p = schema.EventUsage, UsagePayload{
			InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
			CacheCreationInputTokens: u.CacheCreationInputTokens,
			CacheReadInputTokens:     u.CacheReadInputTokens,
			Turns:                    u.Turns, CostUSD: u.CostUSD,
		}
	case e.Kind == KindInit && e.Init != nil:
		t, p = schema.EventLog, LogPayload{
			Level: "info", Message: "agent session started",
			SessionID: e.Init.SessionID, Model: e.Init.Model,
		}
	case e.Kind == KindFinal && e.Final != nil:
		f := e.Final
		lp := LogPayload{Level: "info", Message: "agent finished", Success: &f.Success,
			Subtype: f.Subtype, NumTurns: f.NumTurns}
		if !f.Success {
			lp.Level, lp.Message = "error", "agent failed"
			lp.Error, _ = Truncate(f.Error, MaxSummaryBytes)
		}
		for _, d := range f.PermissionDenials {
			lp.PermissionDenials = append(lp.PermissionDenials, d.ToolName)
		}
		t, p = schema.EventLog, lp
	case e.Kind == KindWarning:
		msg, _ := Truncate(e.Text, MaxSummaryBytes)
		t, p = schema.EventLog, LogPayload{Level: "warn", Message: msg}
	default:
		return "", nil, fmt.Errorf("agent event of kind %q has no schema mapping", e.Kind)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", nil, fmt.Errorf("encoding %s event: %w", t, err)
	}
	return t, b, nil
}
