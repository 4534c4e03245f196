package agent

import (
	"fmt"

	"github.com/kilnbuild/kiln/schema"
)

// SchemaPayload maps a normalized event onto the payload of a schema event:
// text → AgentTextPayload, tool calls → ToolCallPayload, tool results →
// ToolResultPayload (summary bounded to MaxSummaryBytes), usage →
// UsagePayload; init, final and warnings → LogPayload. Text is carried
// whole. An event kind without a mapping (or without its field) is an error.
func SchemaPayload(e Event) (schema.Payload, error) {
	switch {
	case e.Kind == KindText:
		return schema.AgentTextPayload{Text: e.Text}, nil
	case e.Kind == KindToolCall && e.ToolCall != nil:
		c := e.ToolCall
		in, _ := Truncate(c.Input, MaxSummaryBytes)
		return schema.ToolCallPayload{ID: c.ID, Name: c.Name, Input: in}, nil
	case e.Kind == KindToolResult && e.ToolResult != nil:
		r := e.ToolResult
		sum, cut := Truncate(r.Summary, MaxSummaryBytes)
		return schema.ToolResultPayload{
			ToolUseID: r.ToolUseID, Summary: sum, IsError: r.IsError,
			Truncated: r.Truncated || cut, Size: max(r.Size, len(r.Summary)),
		}, nil
	case e.Kind == KindUsage && e.Usage != nil:
		u := e.Usage
		return schema.UsagePayload{
			InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
			CacheCreationInputTokens: u.CacheCreationInputTokens,
			CacheReadInputTokens:     u.CacheReadInputTokens,
			Turns:                    u.Turns, CostUSD: u.CostUSD,
		}, nil
	case e.Kind == KindInit && e.Init != nil:
		return schema.LogPayload{
			Level: schema.LogInfo, Message: "agent session started",
			SessionID: e.Init.SessionID, Model: e.Init.Model,
		}, nil
	case e.Kind == KindFinal && e.Final != nil:
		f := e.Final
		lp := schema.LogPayload{Level: schema.LogInfo, Message: "agent finished", Success: &f.Success,
			Subtype: f.Subtype, NumTurns: f.NumTurns}
		if !f.Success {
			lp.Level, lp.Message = schema.LogError, "agent failed"
			lp.Error, _ = Truncate(f.Error, MaxSummaryBytes)
		}
		for _, d := range f.PermissionDenials {
			lp.PermissionDenials = append(lp.PermissionDenials, d.ToolName)
		}
		return lp, nil
	case e.Kind == KindWarning:
		msg, _ := Truncate(e.Text, MaxSummaryBytes)
		return schema.LogPayload{Level: schema.LogWarn, Message: msg}, nil
	}
	return nil, fmt.Errorf("agent event of kind %q has no schema mapping", e.Kind)
}
