package agent

import (
	"cmp"
	"strconv"
	"strings"

	"github.com/kilnbuild/kiln/schema"
)

// SubtypeMaxTurns is the result subtype of a run stopped at its maximum number of turns.
const SubtypeMaxTurns = "error_max_turns"

// SubtypeMaxBudget is the result subtype of a run stopped by --max-budget-usd
// (its terminal_reason is "budget_exhausted").
const SubtypeMaxBudget = "error_max_budget_usd"

// MaxOutputBytes bounds Outcome.Output (BuildResult.output). The whole text
// stays in the run's events.
const MaxOutputBytes = 64 << 10

// Outcome summarises one agent run.
type Outcome struct {
	Success bool
	// Error explains a failure; empty on success. A failure of the model's
	// API carries its status and message, e.g. "agent could not use the API:
	// 401 authentication_error: Invalid API key · Fix external API key
	// (after 2 retries)".
	Error string
	// Output is the agent's final text, at most MaxOutputBytes (cut with a
	// marker when longer): the result text, or, when the result has none,
	// the last text the agent wrote.
	Output          string
	OutputTruncated bool
	// Subtype is the agent's name for how the run ended.
	Subtype string
	// Reason is why a failed run failed; set for every failure, empty on success:
	// agent_auth (API status 401, 403), agent_bad_request (400, a prompt too
	// long), agent_unavailable (429, 5xx, 529, no answer: a lost connection,
	// a timeout), max_turns, budget_exceeded, agent_pushed (the agent pushed itself on an
	// otherwise successful run), agent_error (anything else, a stream
	// without a result).
	Reason schema.Reason
	// AgentPushed: the agent reported that it pushed to a remote itself.
	// The run is a failure whatever else it did; Reason is agent_pushed
	// unless the run failed for another reason first.
	AgentPushed bool
	// SessionID is the agent's session id.
	SessionID string
	// APIStatus is the HTTP status of the API failure that ended the run;
	// 0 when there was none, or no answer came.
	APIStatus         int
	CostUSD           float64
	Turns             int
	InputTokens       int64 // every prompt token: uncached, cache writes and cache reads
	OutputTokens      int64
	PermissionDenials []PermissionDenial
}

// Usage returns the run's accounting for schema.BuildResult.Usage.
func (o Outcome) Usage() *schema.Usage {
	return &schema.Usage{
		CostUSD:      o.CostUSD,
		Turns:        o.Turns,
		InputTokens:  o.InputTokens,
		OutputTokens: o.OutputTokens,
	}
}

// Apply writes the outcome's fields into r: success, output, error, reason,
// usage, permission denials (tool and summary) and session id. Git fields,
// duration and artifacts are the runner's.
func (o Outcome) Apply(r *schema.BuildResult) {
	r.Success = o.Success
	r.Output = o.Output
	r.Error = o.Error
	r.Reason = o.Reason
	r.Usage = o.Usage()
	r.SessionID = o.SessionID
	r.PermissionDenials = nil
	for _, d := range o.PermissionDenials {
		r.PermissionDenials = append(r.PermissionDenials, schema.PermissionDenial{Tool: d.ToolName, Summary: d.Summary()})
	}
}

// Recorder folds a run's events into its Outcome. The zero value is ready.
// It is not safe for concurrent use.
type Recorder struct {
	lastText  string
	final     *Final
	sessionID string
	// What the events said, for a run whose Final never came.
	retry   *Retry
	retries int
	pushed  string
	denials []PermissionDenial
}

// Observe records one event.
func (r *Recorder) Observe(e Event) {
	switch e.Kind {
	case KindInit:
		if e.Init != nil {
			r.sessionID = e.Init.SessionID
		}
	case KindText:
		r.lastText = e.Text
		r.retry, r.retries = nil, 0
	case KindToolCall:
		r.retry, r.retries = nil, 0
	case KindRetry:
		if e.Retry != nil {
			retry := *e.Retry
			r.retry = &retry
			r.retries++
		}
	case KindDenial:
		if e.Denial != nil {
			r.denials = append(r.denials, *e.Denial)
		}
	case KindPushed:
		r.pushed = cmp.Or(e.Text, "the agent pushed to a remote itself")
	case KindFinal:
		if e.Final != nil {
			r.final = e.Final
		}
	}
}

// Outcome returns the run's outcome. Before a Final event was observed it
// is the failure of a stream that ended without a result: of the last
// retry's API status when a retry was pending (the runner stops an agent
// whose retry cannot help), agent_error otherwise; its usage is then
// unknown (0). A parser's End always ends with a Final, which carries the
// usage summed from the agent's messages when no result line came.
func (r *Recorder) Outcome() Outcome {
	f := r.final
	if f == nil {
		f = &Final{AgentPushed: r.pushed != "", SessionID: r.sessionID, PermissionDenials: r.denials}
		endedWithoutResult(f, r.retry, r.retries, r.pushed)
	}
	text := f.Result
	if text == "" {
		text = r.lastText
	}
	out, cut := Truncate(text, MaxOutputBytes)
	o := Outcome{
		Success:           f.Success,
		Error:             f.Error,
		Output:            out,
		OutputTruncated:   cut,
		Subtype:           f.Subtype,
		Reason:            f.Reason,
		AgentPushed:       f.AgentPushed || r.pushed != "",
		SessionID:         cmp.Or(f.SessionID, r.sessionID),
		APIStatus:         f.APIStatus,
		CostUSD:           f.Usage.CostUSD,
		Turns:             f.Usage.Turns,
		InputTokens:       f.Usage.TotalInputTokens(),
		OutputTokens:      f.Usage.OutputTokens,
		PermissionDenials: f.PermissionDenials,
	}
	if f.Usage.Turns == 0 {
		o.Turns = f.NumTurns
	}
	if o.Success && o.AgentPushed {
		o.Success, o.Reason, o.Error = false, schema.ReasonAgentPushed, pushedError(cmp.Or(r.pushed, "the agent pushed to a remote itself"))
	}
	if !o.Success && o.Error == "" {
		o.Error = "agent failed"
	}
	if !o.Success && o.Reason == schema.ReasonNone {
		o.Reason = schema.ReasonAgentError
	}
	return o
}

// Summarize returns the Outcome of a whole run's events.
func Summarize(events []Event) Outcome {
	var r Recorder
	for _, e := range events {
		r.Observe(e)
	}
	return r.Outcome()
}

// apiReason is the reason of a run ended by a failure of the model's API
// with HTTP status (0: no answer came).
func apiReason(status int) schema.Reason {
	switch {
	case status == 401 || status == 403:
		return schema.ReasonAgentAuth
	case status == 400 || status == 404 || status == 413:
		return schema.ReasonAgentBadRequest
	case status == 0 || status == 408 || status == 429 || status >= 500 && status <= 599:
		return schema.ReasonAgentUnavailable
	}
	return schema.ReasonAgentError
}

// apiFailureText says that the API failed: its status, the API's error
// type, and detail (the agent's account, without its "API Error: 401"
// prefix, which repeats the status).
func apiFailureText(status int, errType, detail string, retries int) string {
	msg := "agent could not reach the API"
	if status != 0 {
		msg = "agent could not use the API: " + strconv.Itoa(status)
		if errType != "" {
			msg += " " + errType
		}
	}
	detail = strings.TrimPrefix(strings.TrimSpace(detail), "API Error: ")
	if status != 0 {
		detail = strings.TrimPrefix(detail, strconv.Itoa(status)+" ")
	}
	if detail != "" {
		msg += ": " + detail
	}
	return bounded(msg + afterRetries(retries))
}

// endedWithoutResult sets f's reason, error and API status for a run whose
// result line never came: the failure of the last retry's API status when a
// retry was pending (retry non-nil), agent_error otherwise; and says what
// the agent pushed. The parser's End and the Recorder (when no Final came)
// both use it.
func endedWithoutResult(f *Final, retry *Retry, retries int, pushed string) {
	f.Reason, f.Error = schema.ReasonAgentError, NoResultMessage
	if retry != nil {
		f.APIStatus = retry.Status
		f.Reason, f.Error = retryFailure(*retry, retries)
	}
	f.Error = alsoPushed(f.Error, pushed)
}

// retryFailure is the reason and text of a run that ended (without a
// result) while the agent was retrying a failed API call: as if the retry
// had been its last.
func retryFailure(r Retry, retries int) (schema.Reason, string) {
	msg := "agent could not reach the API"
	if r.Status != 0 {
		msg = "agent could not use the API: " + strconv.Itoa(r.Status)
	}
	switch {
	case r.Error != "" && r.Error != "unknown":
		sep := " "
		if r.Status == 0 {
			sep = ": "
		}
		msg += sep + r.Error
	case r.Status == 0:
		msg += ": no answer"
	}
	return apiReason(r.Status), bounded(msg + afterRetries(retries))
}

func afterRetries(n int) string {
	switch {
	case n == 1:
		return " (after 1 retry)"
	case n > 1:
		return " (after " + strconv.Itoa(n) + " retries)"
	}
	return ""
}

// pushedError is the error of a run that succeeded but whose agent pushed itself.
func pushedError(pushed string) string {
	return bounded(pushed + "; only Kiln's git step may push, so the build fails")
}

// alsoPushed adds to a failure's text that the agent pushed.
func alsoPushed(msg, pushed string) string {
	if pushed == "" {
		return msg
	}
	return bounded(msg + "; and " + pushed)
}

// bounded cuts an error text to MaxSummaryBytes.
func bounded(s string) string {
	s, _ = Truncate(s, MaxSummaryBytes)
	return s
}
