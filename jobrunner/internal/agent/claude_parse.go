package agent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/kilnbuild/kiln/schema"
)

// claudeParser reads Claude Code's stream-json output.
//
// Only the last `result` line says how a run ended; it is held until End so
// that the Final event is always the last one, and exactly one. What the
// run's other lines said (retries, denials, a push, the messages' usage)
// is kept for the Final too, so that a run cut short before its result
// still says why it failed and what it spent.
type claudeParser struct {
	lineNo int
	result *claudeResult
	ended  bool

	sessionID string
	// inputs holds the compact input of recent tool calls by id: a
	// permission_denied line names the call, not its input.
	inputs  map[string]string
	denials []PermissionDenial // from permission_denied lines, in order
	// retry is the last api_retry not followed by an answer of the model,
	// and retries counts those since the last answer.
	retry   *Retry
	retries int
	pushed  string // what the CLI reported of the agent's push; empty: none
	// usage is each assistant message's usage, by message id (the CLI
	// prints one line per content block, each with the message's usage).
	usage map[string]claudeUsage
	turns int
}

// maxRememberedInputs bounds claudeParser.inputs; a denial names one of the
// latest calls.
const maxRememberedInputs = 1024

// claudeLine is the part of every line the parser looks at first.
type claudeLine struct {
	Type              string          `json:"type"`
	Subtype           string          `json:"subtype"`
	Message           json.RawMessage `json:"message"`
	ParentToolUseID   *string         `json:"parent_tool_use_id"`
	IsAPIErrorMessage bool            `json:"is_api_error_message"`
}

type claudeInit struct {
	SessionID      string   `json:"session_id"`
	Model          string   `json:"model"`
	Version        string   `json:"claude_code_version"`
	PermissionMode string   `json:"permissionMode"`
	Tools          []string `json:"tools"`
}

type claudeRetry struct {
	Attempt     int     `json:"attempt"`
	MaxRetries  int     `json:"max_retries"`
	DelayMS     float64 `json:"retry_delay_ms"`
	ErrorStatus *int    `json:"error_status"`
	Error       string  `json:"error"`
}

type claudeDenied struct {
	ToolName       string `json:"tool_name"`
	ToolUseID      string `json:"tool_use_id"`
	Message        string `json:"message"`
	DecisionReason string `json:"decision_reason"`
}

type claudeVCS struct {
	Kind   string `json:"kind"`
	Branch string `json:"branch"`
	Cwd    string `json:"cwd"`
}

type claudeInformational struct {
	Content string `json:"content"`
	Level   string `json:"level"`
}

type claudeMessage struct {
	ID      string          `json:"id"`
	Model   string          `json:"model"`
	Content json.RawMessage `json:"content"`
	Usage   *claudeUsage    `json:"usage"`
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
	Subtype        string      `json:"subtype"`
	IsError        bool        `json:"is_error"`
	TerminalReason string      `json:"terminal_reason"`
	APIErrorStatus *int        `json:"api_error_status"`
	APIErrorType   string      `json:"api_error_type"`
	SessionID      string      `json:"session_id"`
	DurationMS     int64       `json:"duration_ms"`
	NumTurns       int         `json:"num_turns"`
	Result         string      `json:"result"`
	TotalCostUSD   float64     `json:"total_cost_usd"`
	Usage          claudeUsage `json:"usage"`
	// SinceLastResult is this run's own usage by model. A resumed session's
	// total_cost_usd and modelUsage are the session's (its earlier runs
	// included); this is not.
	SinceLastResult   map[string]claudeModelUsage `json:"model_usage_since_last_result"`
	PermissionDenials []claudeDenial              `json:"permission_denials"`
	Errors            json.RawMessage             `json:"errors"`
}

// claudeModelUsage is a result's usage of one model.
type claudeModelUsage struct {
	CostUSD                  float64 `json:"costUSD"`
	InputTokens              int64   `json:"inputTokens"`
	OutputTokens             int64   `json:"outputTokens"`
	CacheReadInputTokens     int64   `json:"cacheReadInputTokens"`
	CacheCreationInputTokens int64   `json:"cacheCreationInputTokens"`
}

type claudeDenial struct {
	ToolName  string          `json:"tool_name"`
	ToolUseID string          `json:"tool_use_id"`
	ToolInput json.RawMessage `json:"tool_input"`
}

// claudeSynthetic is the model Claude Code names on the messages it writes
// itself, such as the text it puts in place of an answer when the API failed.
const claudeSynthetic = "<synthetic>"

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
		return p.system(l.Subtype, line)
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

// system reads the system lines Kiln reports; others (hooks, compaction,
// status, ...) are skipped.
func (p *claudeParser) system(subtype string, line []byte) []Event {
	switch subtype {
	case "init":
		var in claudeInit
		if err := json.Unmarshal(line, &in); err != nil {
			return p.warn("bad system init line", err, line)
		}
		p.sessionID = in.SessionID
		return []Event{{Kind: KindInit, Init: &Init{SessionID: in.SessionID, Model: in.Model,
			Version: in.Version, PermissionMode: in.PermissionMode, Tools: in.Tools}}}
	case "api_retry":
		var r claudeRetry
		if err := json.Unmarshal(line, &r); err != nil {
			return p.warn("bad system api_retry line", err, line)
		}
		retry := Retry{Attempt: r.Attempt, MaxRetries: r.MaxRetries, DelayMS: int64(r.DelayMS), Error: r.Error}
		if r.ErrorStatus != nil {
			retry.Status = *r.ErrorStatus
		}
		p.retry = &retry
		p.retries++
		return []Event{{Kind: KindRetry, Retry: &retry}}
	case "permission_denied":
		var d claudeDenied
		if err := json.Unmarshal(line, &d); err != nil {
			return p.warn("bad system permission_denied line", err, line)
		}
		denial := PermissionDenial{ToolName: d.ToolName, ToolUseID: d.ToolUseID, Input: p.inputs[d.ToolUseID],
			Reason: firstLine(cmp.Or(d.Message, d.DecisionReason))}
		denial.Reason = clipText(denial.Reason, MaxSummaryBytes)
		p.denials = append(p.denials, denial)
		return []Event{{Kind: KindDenial, Denial: &denial}}
	case "vcs_state_changed":
		var v claudeVCS
		if err := json.Unmarshal(line, &v); err != nil {
			return p.warn("bad system vcs_state_changed line", err, line)
		}
		if v.Kind != "push" {
			return nil
		}
		text := "the agent pushed to a remote itself"
		if v.Branch != "" {
			text = "the agent pushed branch " + strconv.Quote(v.Branch) + " itself"
		}
		if v.Cwd != "" {
			text += " (in " + v.Cwd + ")"
		}
		text = clipText(text, MaxSummaryBytes)
		p.pushed = text
		return []Event{{Kind: KindPushed, Text: text}}
	case "informational":
		var in claudeInformational
		if err := json.Unmarshal(line, &in); err != nil {
			return p.warn("bad system informational line", err, line)
		}
		if strings.TrimSpace(in.Content) == "" {
			return nil
		}
		level := schema.LogInfo
		switch in.Level {
		case "warning", "warn":
			level = schema.LogWarn
		case "error":
			level = schema.LogError
		}
		return []Event{{Kind: KindNotice, Notice: &Notice{Level: level, Text: clipText(in.Content, MaxSummaryBytes)}}}
	}
	return nil
}

func (p *claudeParser) message(l claudeLine, line []byte) []Event {
	if len(l.Message) == 0 || string(l.Message) == "null" {
		return p.warn(l.Type+" line without a message", nil, line)
	}
	var m claudeMessage
	if err := json.Unmarshal(l.Message, &m); err != nil {
		return p.warn("bad "+l.Type+" message", err, line)
	}
	synthetic := l.Type == "assistant" && (m.Model == claudeSynthetic || l.IsAPIErrorMessage)
	if l.Type == "assistant" && !synthetic {
		p.answered(m, l.ParentToolUseID == nil)
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
		case synthetic && b.Type == "text":
			if b.Text != "" {
				level := schema.LogInfo
				if l.IsAPIErrorMessage {
					level = schema.LogError
				}
				events = append(events, Event{Kind: KindNotice, Notice: &Notice{Level: level, Text: clipText(b.Text, MaxSummaryBytes)}})
			}
		case l.Type == "assistant" && b.Type == "text":
			if b.Text != "" {
				events = append(events, Event{Kind: KindText, Text: b.Text})
			}
		case l.Type == "assistant" && b.Type == "tool_use":
			input := compactJSON(b.Input)
			p.remember(b.ID, input)
			events = append(events, Event{Kind: KindToolCall, ToolCall: &ToolCall{ID: b.ID, Name: b.Name, Input: input}})
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

// answered records an assistant message of the model: the API answered
// (so an earlier retry succeeded), and the message's usage counts.
func (p *claudeParser) answered(m claudeMessage, mainThread bool) {
	p.retry, p.retries = nil, 0
	if p.usage == nil {
		p.usage = map[string]claudeUsage{}
	}
	id := m.ID
	if id == "" {
		id = "line " + strconv.Itoa(p.lineNo)
	}
	if _, seen := p.usage[id]; !seen && mainThread {
		p.turns++
	}
	var u claudeUsage
	if m.Usage != nil {
		u = *m.Usage
	}
	p.usage[id] = u
}

func (p *claudeParser) remember(id, input string) {
	if id == "" {
		return
	}
	if p.inputs == nil || len(p.inputs) >= maxRememberedInputs {
		p.inputs = map[string]string{}
	}
	p.inputs[id] = input
}

func (p *claudeParser) End() []Event {
	if p.ended {
		// A second End must still honour "exactly one Final, last".
		return nil
	}
	p.ended = true
	f := p.final()
	if p.result == nil && f.Usage == (Usage{}) {
		return []Event{{Kind: KindFinal, Final: f}}
	}
	u := f.Usage
	return []Event{{Kind: KindUsage, Usage: &u}, {Kind: KindFinal, Final: f}}
}

// final says how the run ended: as its result says, or, without one, as
// its last lines tell.
func (p *claudeParser) final() *Final {
	f := &Final{SessionID: p.sessionID, AgentPushed: p.pushed != ""}
	r := p.result
	if r == nil {
		f.Usage = p.messageUsage()
		f.NumTurns = f.Usage.Turns
		f.PermissionDenials = p.denials
		endedWithoutResult(f, p.retry, p.retries, p.pushed)
		return f
	}
	f.Subtype, f.TerminalReason, f.Result, f.IsError = r.Subtype, r.TerminalReason, r.Result, r.IsError
	f.NumTurns, f.TotalCostUSD, f.DurationMS = r.NumTurns, r.TotalCostUSD, r.DurationMS
	f.SessionID = cmp.Or(r.SessionID, p.sessionID)
	if r.APIErrorStatus != nil {
		f.APIStatus = *r.APIErrorStatus
	}
	f.Usage = runUsage(r)
	for _, d := range r.PermissionDenials {
		pd := PermissionDenial{ToolName: d.ToolName, ToolUseID: d.ToolUseID, Input: compactJSON(d.ToolInput)}
		for _, seen := range p.denials {
			if seen.ToolUseID == d.ToolUseID {
				pd.Reason = seen.Reason
			}
		}
		f.PermissionDenials = append(f.PermissionDenials, pd)
	}
	if len(f.PermissionDenials) == 0 {
		f.PermissionDenials = p.denials
	}
	switch success := r.Subtype == "success" && !r.IsError; {
	case success && p.pushed != "":
		f.Reason, f.Error = schema.ReasonAgentPushed, pushedError(p.pushed)
	case success:
		f.Success = true
	default:
		f.Reason, f.Error = claudeFailure(r, f.APIStatus, p.retries)
		f.Error = alsoPushed(f.Error, p.pushed)
	}
	return f
}

// runUsage is the run's own accounting from its result.
// model_usage_since_last_result is preferred: it is the run's own and
// whole, while 2.1.328's usage leaves out the turn a budget stop came after
// (all zero when that was the first) and a resumed session's
// total_cost_usd and modelUsage count its earlier runs too. Without it, the
// usage, and total_cost_usd unless the usage is all zero (no turn was
// answered: a resumed session's total would be its earlier runs' cost).
func runUsage(r *claudeResult) Usage {
	if len(r.SinceLastResult) == 0 {
		u := Usage{
			InputTokens:              r.Usage.InputTokens,
			OutputTokens:             r.Usage.OutputTokens,
			CacheCreationInputTokens: r.Usage.CacheCreationInputTokens,
			CacheReadInputTokens:     r.Usage.CacheReadInputTokens,
			Turns:                    r.NumTurns,
		}
		if r.Usage != (claudeUsage{}) {
			u.CostUSD = r.TotalCostUSD
		}
		return u
	}
	u := Usage{Turns: r.NumTurns}
	for _, m := range r.SinceLastResult {
		u.InputTokens += m.InputTokens
		u.OutputTokens += m.OutputTokens
		u.CacheCreationInputTokens += m.CacheCreationInputTokens
		u.CacheReadInputTokens += m.CacheReadInputTokens
		u.CostUSD += m.CostUSD
	}
	return u
}

// messageUsage sums the usage of the model's messages: the accounting of a
// run that ended without a result. Claude Code prints a message's usage as
// the message started, so output tokens are undercounted (each message's
// count at its start); its cost is not reported and stays 0.
func (p *claudeParser) messageUsage() Usage {
	u := Usage{Turns: p.turns}
	for _, m := range p.usage {
		u.InputTokens += m.InputTokens
		u.OutputTokens += m.OutputTokens
		u.CacheCreationInputTokens += m.CacheCreationInputTokens
		u.CacheReadInputTokens += m.CacheReadInputTokens
	}
	return u
}

// maxTurnsError is how Claude Code names the configured limit in errors[].
var maxTurnsError = regexp.MustCompile(`maximum number of turns \((\d+)\)`)

// maxBudgetError is how Claude Code names the configured budget in errors[]:
// "Reached maximum budget ($0.05)".
var maxBudgetError = regexp.MustCompile(`maximum budget \(\$([0-9.]+)\)`)

// budgetStopped is the error of a run stopped by its budget: the cap (from
// errors[], as the CLI was given it), what the run spent and in how many turns.
func budgetStopped(errs []string, spent float64, turns int) string {
	limit := "its budget"
	for _, e := range errs {
		if m := maxBudgetError.FindStringSubmatch(e); m != nil {
			limit = "the build's budget of $" + m[1]
			if v, err := strconv.ParseFloat(m[1], 64); err == nil {
				limit = "the build's budget of " + USD(v)
			}
		}
	}
	noun := "turns"
	if turns == 1 {
		noun = "turn"
	}
	return fmt.Sprintf("the agent was stopped by %s after spending %s in %d %s", limit, USD(spent), turns, noun)
}

// USD formats an amount of dollars for people: "$0.12", "$0.0712", at
// most four decimals, at least two.
func USD(v float64) string {
	s := strconv.FormatFloat(v, 'f', 4, 64)
	s = strings.TrimRight(s, "0")
	if i := strings.IndexByte(s, '.'); i >= 0 && len(s)-i < 3 {
		s += strings.Repeat("0", 3-(len(s)-i))
	}
	return "$" + s
}

// claudeFailure says why a result that is no success failed. retries
// counts the api_retry lines of the failed call.
func claudeFailure(r *claudeResult, status, retries int) (schema.Reason, string) {
	errs := stringList(r.Errors)
	detail := strings.Join(errs, "; ")
	if detail == "" {
		detail = firstLine(r.Result)
	}
	switch {
	case r.TerminalReason == "prompt_too_long" && status == 0:
		return schema.ReasonAgentBadRequest, bounded("agent's prompt is too long: " + detail)
	case r.TerminalReason == "prompt_too_long":
		return schema.ReasonAgentBadRequest, apiFailureText(status, r.APIErrorType, detail, retries)
	case status != 0 || r.TerminalReason == "api_error":
		return apiReason(status), apiFailureText(status, r.APIErrorType, detail, retries)
	case r.Subtype == SubtypeMaxBudget || r.TerminalReason == "budget_exhausted":
		return schema.ReasonBudgetExceeded, bounded(budgetStopped(errs, runUsage(r).CostUSD, r.NumTurns))
	case r.Subtype == SubtypeMaxTurns || r.TerminalReason == "max_turns":
		// errors[] says "Reached maximum number of turns (N)" with the
		// configured N; num_turns is N+1.
		for _, e := range errs {
			if m := maxTurnsError.FindStringSubmatch(e); m != nil {
				return schema.ReasonMaxTurns, "agent stopped: reached the maximum number of turns (" + m[1] + ")"
			}
		}
		msg := "agent stopped: reached its maximum number of turns"
		if detail != "" {
			msg += ": " + detail
		}
		return schema.ReasonMaxTurns, bounded(msg)
	}
	var msg string
	switch r.Subtype {
	case "success", "":
		msg = "agent reported an error"
	default:
		msg = "agent failed (" + r.Subtype + ")"
	}
	if detail != "" {
		msg += ": " + detail
	}
	return schema.ReasonAgentError, bounded(msg)
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
