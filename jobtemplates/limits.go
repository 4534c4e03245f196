package jobtemplates

import (
	"fmt"
	"math"

	"github.com/kilnbuild/kiln/schema"
)

// AgentLimits are one build's agent limits: its spec's, or the template's
// defaults.
type AgentLimits struct {
	MaxTurns     int
	MaxBudgetUSD float64 // 0: no cap
}

// LimitError is a spec asking for more than its template allows. Field is
// the spec's field (max_turns, max_budget_usd).
type LimitError struct {
	Field string
	Rule  string
}

func (e *LimitError) Error() string { return e.Field + ": " + e.Rule }

// BuildLimits resolves the agent limits of a build with spec on t: the
// spec's max_turns and max_budget_usd, each at most the template's Limits,
// or the template's agent defaults. A value out of range is a *LimitError
// naming the field and the cap.
func (t *Template) BuildLimits(spec schema.BuildSpec) (AgentLimits, error) {
	l := AgentLimits{MaxTurns: t.Agent.MaxTurns, MaxBudgetUSD: t.Agent.MaxBudgetUSD}
	if n := spec.MaxTurns; n != nil {
		switch {
		case *n < 1:
			return l, &LimitError{"max_turns", fmt.Sprintf("must be at least 1 (got %d)", *n)}
		case *n > t.Limits.MaxTurns:
			return l, &LimitError{"max_turns", fmt.Sprintf("must be at most %d, template %s's limits.maxTurns (got %d)", t.Limits.MaxTurns, t.Name, *n)}
		}
		l.MaxTurns = *n
	}
	if b := spec.MaxBudgetUSD; b != nil {
		switch {
		case math.IsNaN(*b) || math.IsInf(*b, 0) || *b <= 0:
			return l, &LimitError{"max_budget_usd", fmt.Sprintf("must be a positive amount of US dollars (got %v)", *b)}
		case t.Limits.MaxBudgetUSD > 0 && *b > t.Limits.MaxBudgetUSD:
			return l, &LimitError{"max_budget_usd", fmt.Sprintf("must be at most %v, template %s's limits.maxBudgetUSD (got %v)", t.Limits.MaxBudgetUSD, t.Name, *b)}
		}
		l.MaxBudgetUSD = *b
	}
	return l, nil
}
