package intake

import (
	"context"
	"fmt"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// ProblemMonthlyBudget is the problem type of a build refused because its
// project reached its template's monthly budget (429, with Retry-After).
const ProblemMonthlyBudget = "https://kiln.dev/problems/monthly-budget"

// MonthlyBudgetError refuses a build whose template has a monthly budget
// (limits.monthlyBudgetUSD) that the project's spend this month has
// reached. The API answers it 429, problem type ProblemMonthlyBudget, with
// Retry-After the time left until the next month (UTC).
type MonthlyBudgetError struct {
	ProjectID string
	Template  string
	CapUSD    float64 // the template's limits.monthlyBudgetUSD
	Spend     schema.ProjectSpend
	// RetryAfter is the time from the check to the next month (UTC).
	RetryAfter time.Duration
}

func (e *MonthlyBudgetError) Error() string {
	return fmt.Sprintf("template %s: monthly budget reached: the project's builds spent $%.2f in %s (%d builds), "+
		"and the template's limits.monthlyBudgetUSD is $%.2f; builds with this template are refused until the month ends (UTC)",
		e.Template, e.Spend.CostUSD, e.Spend.Month, e.Spend.Builds, e.CapUSD)
}

// checkMonthlyBudget returns a *MonthlyBudgetError when spec's template caps
// a project's monthly spend and project id's spend this month has reached
// it. Only a template with a cap pays the query.
func (s *Service) checkMonthlyBudget(ctx context.Context, projectID string, spec schema.BuildSpec) error {
	t, ok := s.Templates.Get(spec.TemplateName())
	if !ok || t.Limits.MonthlyBudgetUSD <= 0 {
		return nil
	}
	now := s.now().UTC()
	spend, err := store.ProjectSpend(ctx, s.Store.Pool, projectID, now)
	if err != nil {
		return err
	}
	if spend.CostUSD < t.Limits.MonthlyBudgetUSD {
		return nil
	}
	_, next := store.MonthOf(now)
	return &MonthlyBudgetError{ProjectID: projectID, Template: t.Name, CapUSD: t.Limits.MonthlyBudgetUSD, Spend: spend,
		RetryAfter: next.Sub(now)}
}
