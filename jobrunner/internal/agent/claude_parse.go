package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// claudeParser reads Claude Code's stream-json output.
//
// Only the last `result` line says how a run ended; it is held until End so
// that the Final event is always the last one, and exactly one.
type claudeParser struct {
	lineNo int
	result *claudeResult
	ended  bool
}

// claudeLine is the part of every line the parser looks at first.
type claudeLine struct {
	Type    string          `json:"type"`
	Subtype string          `json:"subtype"`
	Message json.RawMessage `json:"message"`
}

type claudeInit struct {
	SessionID string `json:"session_id"`
	Model     string `json:"model"`
}

type claudeMessage struct {
	Content json.RawMessage `json:"content"`
}

type claudeBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

type claudeUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
}

type claudeResult struct {
	Subtype           string          `json:"subtype"`
	IsError           bool            `json:"is_error"`
	DurationMS        int64           `json:"duration_ms"`
	NumTurns          int             `json:"num_turns"`
	Result            string          `json:"result"`
	TotalCostUSD      float64         `json:"total_cost_usd"`
	Usage             claudeUsage     `json:"usage"`
	PermissionDenials []claudeDenial  `json:"permission_denials"`
	Errors            json.RawMessage `json:"errors"`
}

type claudeDenial struct {
	ToolName  string          `json:"tool_name"`
	ToolUseID string          `json:"tool_use_id"`
	ToolInput json.RawMessage `json:"tool_input"`
}

// NoResultMessage is Final.Error (and Outcome.Error) when the stream ended without a result line.
const NoResultMessage = "agent stream ended without a result"

func (p *claudeParser) Line(line []byte) []Event {
	p.lineNo++
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	var l claudeLine
	if err := json.Unmarshal(line, &l); err != nil {
		return p.warn("not a JSON object", err, line)
	}
	switch l.Type {
	case "system":
		if l.Subtype != "init" {
			return nil
		}
		var in claudeInit
		if err := json.Unmarshal(line, &in); err != nil {
			return p.warn("bad system init line", err, line)
		}
		return []Event{{Kind: KindInit, Init: &Init{SessionID: in.SessionID, Model: in.Model}}}
	case "assistant", "user":
		return p.message(l, line)
	case "result":
		var r claudeResult
		if err := json.Unmarshal(line, &r); err != nil {
			return p.warn("bad result line", err, line)
		}
		p.result = &r
		return nil
	case "":
		return p.warn("line without a type", nil, line)
	default:
		// Newer CLI versions add line types (rate_limit_event, stream_event, ...).
		return nil
	}
}

func (p *claudeParser) message(l claudeLine, line []byte) []Event {
	if len(l.Message) == 0 || string(l.Message) == "null" {
		return p.warn(l.Type+" line without a message", nil, line)
	}
	var m claudeMessage
	if err := json.Unmarshal(l.Message, &m); err != nil {
		return p.warn("bad "+l.Type+" message", err, line)
	}
	content := bytes.TrimSpace(m.Content)
	if len(content) == 0 || content[0] != '[' {
		// A plain string is the prompt echoed back; nothing to report.
		return nil
	}
	var blocks []json.RawMessage
	if err := json.Unmarshal(content, &blocks); err != nil {
		return p.warn("bad "+l.Type+" content", err, line)
	}
	var events []Event
	for _, raw := range blocks {
		var b claudeBlock
		if err := json.Unmarshal(raw, &b); err != nil {
			events = append(events, p.warn("bad content block", err, raw)...)
			continue
		}
		switch {
		case l.Type == "assistant" && b.Type == "text":
			if b.Text != "" {
				events = append(events, Event{Kind: KindText, Text: b.Text})
			}
		case l.Type == "assistant" && b.Type == "tool_use":
			events = append(events, Event{Kind: KindToolCall, ToolCall: &ToolCall{
				ID: b.ID, Name: b.Name, Input: compactJSON(b.Input),
			}})
		case l.Type == "user" && b.Type == "tool_result":
			text := toolResultText(b.Content)
			summary, cut := Truncate(text, MaxSummaryBytes)
			events = append(events, Event{Kind: KindToolResult, ToolResult: &ToolResult{
				ToolUseID: b.ToolUseID, Summary: summary, IsError: b.IsError,
				Truncated: cut, Size: len(text),
			}})
		}
		// Other blocks (thinking, images, ...) are not reported.
	}
	return events
}

func (p *claudeParser) End() []Event {
	if p.ended {
		// A second End must still honour "exactly one Final, last".
		return nil
	}
	p.ended = true
	r := p.result
	if r == nil {
		return []Event{{Kind: KindFinal, Final: &Final{Error: NoResultMessage}}}
	}
	u := Usage{
		InputTokens:              r.Usage.InputTokens,
		OutputTokens:             r.Usage.OutputTokens,
		CacheCreationInputTokens: r.Usage.CacheCreationInputTokens,
		CacheReadInputTokens:     r.Usage.CacheReadInputTokens,
		Turns:                    r.NumTurns,
		CostUSD:                  r.TotalCostUSD,
	}
	f := &Final{
		Success:      r.Subtype == "success" && !r.IsError,
		Subtype:      r.Subtype,
		Result:       r.Result,
		IsError:      r.IsError,
		NumTurns:     r.NumTurns,
		TotalCostUSD: r.TotalCostUSD,
		DurationMS:   r.DurationMS,
		Usage:        u,
	}
	for _, d := range r.PermissionDenials {
		f.PermissionDenials = append(f.PermissionDenials, PermissionDenial{
			ToolName: d.ToolName, ToolUseID: d.ToolUseID, Input: compactJSON(d.ToolInput),
		})
	}
	if !f.Success {
		f.Error = claudeError(r)
	}
	return []Event{{Kind: KindUsage, Usage: &u}, {Kind: KindFinal, Final: f}}
}

// claudeError explains a failed result in one line.
func claudeError(r *claudeResult) string {
	detail := strings.Join(stringList(r.Errors), "; ")
	if detail == "" {
		detail = firstLine(r.Result)
	}
	var msg string
	switch r.Subtype {
	case SubtypeMaxTurns:
		// errors[] only repeats this.
		return fmt.Sprintf("agent stopped: reached the maximum number of turns (%d)", r.NumTurns)
	case "success", "":
		msg = "agent reported an error"
	default:
		msg = "agent failed (" + r.Subtype + ")"
	}
	if detail != "" {
		msg += ": " + detail
	}
	msg, _ = Truncate(msg, MaxSummaryBytes)
	return msg
}

// stringList reads a JSON array of strings (or of anything, compacted);
// anything else yields nothing.
func stringList(raw json.RawMessage) []string {
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) != nil {
			s = compactJSON(it)
		}
		if s = firstLine(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s
}

// toolResultText reads a tool_result's content: a string, or a list of
// blocks whose text parts are joined. Non-text blocks are noted by type.
func toolResultText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &blocks) == nil {
		var parts []string
		for _, b := range blocks {
			if b.Type == "text" {
				parts = append(parts, b.Text)
			} else if b.Type != "" {
				parts = append(parts, "["+b.Type+"]")
			}
		}
		return strings.Join(parts, "\n")
	}
	return compactJSON(raw)
}

// compactJSON returns raw as compact JSON bounded to MaxSummaryBytes.
func compactJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		s, _ := Truncate(string(raw), MaxSummaryBytes)
		return s
	}
	s, _ := Truncate(buf.String(), MaxSummaryBytes)
	return s
}

// maxWarningBytes bounds a warning's text.
const maxWarningBytes = 1 << 10

// warn reports an unreadable line with a short, bounded excerpt.
func (p *claudeParser) warn(what string, err error, line []byte) []Event {
	msg := fmt.Sprintf("agent output line %d: %s", p.lineNo, what)
	if err != nil {
		msg += ": " + err.Error()
	}
	excerpt, _ := Truncate(string(line), 200)
	msg += ": " + excerpt
	msg, _ = Truncate(strings.ToValidUTF8(msg, "\uFFFD"), maxWarningBytes)
	return []Event{{Kind: KindWarning, Text: msg}}
}
