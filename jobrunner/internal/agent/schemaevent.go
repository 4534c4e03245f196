package agent

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/kilnbuild/kiln/schema"
)

// SchemaPayload maps a normalized event onto the payload of a schema event:
//
//   - text → AgentTextPayload (whole);
//   - tool calls → ToolCallPayload, tool results → ToolResultPayload
//     (input and summary bounded to MaxSummaryBytes);
//   - retries → AgentRetryPayload (attempt, max_retries, delay_ms, status, error);
//   - denials → PermissionDeniedPayload (tool, a short input summary, the agent's reason);
//   - usage → UsagePayload;
//   - init → LogPayload "agent session started" carrying the session id,
//     model, agent version, permission mode in effect and tools: the
//     build's first agent event;
//   - a push by the agent → LogPayload at warn; the CLI's own notices →
//     LogPayload at their level; final → LogPayload (info, or error with
//     the error text); warnings → LogPayload at warn.
//
// Every payload it returns passes the dispatcher's validation of runner
// events. An event kind without a mapping (or without its field) is an error.
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
	case e.Kind == KindRetry && e.Retry != nil:
		r := e.Retry
		p := schema.AgentRetryPayload{Attempt: max(r.Attempt, 1), MaxRetries: max(r.MaxRetries, 0),
			DelayMS: max(r.DelayMS, 0), Status: r.Status, Error: clipText(r.Error, 200)}
		if p.Status < 100 || p.Status > 599 {
			p.Status = 0
		}
		return p, nil
	case e.Kind == KindDenial && e.Denial != nil:
		d := e.Denial
		tool := d.ToolName
		if strings.TrimSpace(tool) == "" {
			tool = "unknown"
		}
		return schema.PermissionDeniedPayload{ToolUseID: d.ToolUseID, Tool: clipText(tool, 200),
			Summary: d.Summary(), Reason: clipText(d.Reason, MaxSummaryBytes)}, nil
	case e.Kind == KindUsage && e.Usage != nil:
		u := e.Usage
		return schema.UsagePayload{
			InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
			CacheCreationInputTokens: u.CacheCreationInputTokens,
			CacheReadInputTokens:     u.CacheReadInputTokens,
			Turns:                    u.Turns, CostUSD: u.CostUSD,
		}, nil
	case e.Kind == KindInit && e.Init != nil:
		in := e.Init
		return schema.LogPayload{
			Level: schema.LogInfo, Message: initMessage(in),
			SessionID: in.SessionID, Model: in.Model, AgentVersion: in.Version,
			PermissionMode: in.PermissionMode, Tools: in.Tools,
		}, nil
	case e.Kind == KindPushed:
		msg, _ := Truncate(cmp.Or(e.Text, "the agent pushed to a remote itself"), MaxSummaryBytes)
		return schema.LogPayload{Level: schema.LogWarn, Message: msg}, nil
	case e.Kind == KindNotice && e.Notice != nil:
		level := e.Notice.Level
		switch level {
		case schema.LogInfo, schema.LogWarn, schema.LogError:
		default:
			level = schema.LogInfo
		}
		msg, _ := Truncate("agent: "+e.Notice.Text, MaxSummaryBytes)
		return schema.LogPayload{Level: level, Message: msg}, nil
	case e.Kind == KindFinal && e.Final != nil:
		f := e.Final
		lp := schema.LogPayload{Level: schema.LogInfo, Message: "agent finished", Success: &f.Success,
			Subtype: f.Subtype, NumTurns: f.NumTurns}
		if !f.Success {
			lp.Level, lp.Message = schema.LogError, "agent failed"
			if f.Reason != schema.ReasonNone {
				lp.Message += " (" + string(f.Reason) + ")"
			}
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

// initMessage says in one line which agent runs, and how.
func initMessage(in *Init) string {
	msg := "agent session started"
	var parts []string
	if in.Version != "" {
		parts = append(parts, "version "+in.Version)
	}
	if in.Model != "" {
		parts = append(parts, "model "+in.Model)
	}
	if in.PermissionMode != "" {
		parts = append(parts, "permission mode "+in.PermissionMode)
	}
	if len(parts) > 0 {
		msg += ": " + strings.Join(parts, ", ")
	}
	return clipText(msg, MaxSummaryBytes)
}
