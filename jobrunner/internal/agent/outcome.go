package agent

import "github.com/kilnbuild/kiln/schema"

// SubtypeMaxTurns is the result subtype of a run stopped at its maximum number of turns.
const SubtypeMaxTurns = "error_max_turns"

// MaxOutputBytes bounds Outcome.Output (BuildResult.output). The whole text
// stays in the run's events.
const MaxOutputBytes = 64 << 10

// Outcome summarises one agent run.
type Outcome struct {
	Success bool
	// Error explains a failure; empty on success.
	Error string
	// Output is the agent's final text, at most MaxOutputBytes (cut with a
	// marker when longer): the result text, or, when the result has none,
	// the last text the agent wrote.
	Output          string
	OutputTruncated bool
	// Subtype is the agent's name for how the run ended.
	Subtype string
	// Reason is why a failed run failed (max_turns, agent_error); empty on success.
	Reason            schema.Reason
	CostUSD           float64
	Turns             int
	InputTokens       int64 // every prompt token: uncached, cache writes and cache reads
	OutputTokens      int64
	PermissionDenials []PermissionDenial
	AgentPushed       bool // TEMPORARY stub field (helper C); helper B's outcome.go has it
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

// Apply writes the outcome's fields into r: success, output, error and usage.
// Git fields, duration and artifacts are the runner's.
func (o Outcome) Apply(r *schema.BuildResult) {
	r.Success = o.Success
	r.Output = o.Output
	r.Error = o.Error
	r.Reason = o.Reason
	r.Usage = o.Usage()
}

// Recorder folds a run's events into its Outcome. The zero value is ready.
type Recorder struct {
	lastText string
	final    *Final
}

// Observe records one event.
func (r *Recorder) Observe(e Event) {
	switch e.Kind {
	case KindText:
		r.lastText = e.Text
	case KindFinal:
		if e.Final != nil {
			r.final = e.Final
		}
	}
}

// Outcome returns the run's outcome. Before a Final event was observed it
// is the failure of a stream that ended without a result.
func (r *Recorder) Outcome() Outcome {
	f := r.final
	if f == nil {
		f = &Final{Error: NoResultMessage}
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
		CostUSD:           f.TotalCostUSD,
		Turns:             f.NumTurns,
		InputTokens:       f.Usage.TotalInputTokens(),
		OutputTokens:      f.Usage.OutputTokens,
		PermissionDenials: f.PermissionDenials,
	}
	if !o.Success && o.Error == "" {
		o.Error = "agent failed"
	}
	if !o.Success {
		o.Reason = schema.ReasonAgentError
		if o.Subtype == SubtypeMaxTurns {
			o.Reason = schema.ReasonMaxTurns
		}
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
