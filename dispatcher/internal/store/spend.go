package store

import (
	"context"
	"fmt"
	"time"

	"github.com/kilnbuild/kiln/schema"
)

// MonthLayout is how ProjectSpend names a month ("2026-12").
const MonthLayout = "2006-01"

// MonthOf returns the calendar month (UTC) t falls in: its first instant
// and the first instant of the next month.
func MonthOf(t time.Time) (start, next time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

// ProjectSpend sums what the agents of project id's builds reported
// spending (builds.cost_usd), over the builds that finished in the calendar
// month (UTC) of at, every template's. One range read of the
// builds_project_spend index: only builds with a cost are in it.
func ProjectSpend(ctx context.Context, db DB, id string, at time.Time) (schema.ProjectSpend, error) {
	start, next := MonthOf(at)
	s := schema.ProjectSpend{Month: start.Format(MonthLayout)}
	err := db.QueryRow(ctx, `SELECT COALESCE(sum(cost_usd), 0), count(*) FROM builds
		WHERE project_id = $1 AND cost_usd > 0 AND finished_at >= $2 AND finished_at < $3`,
		id, start, next).Scan(&s.CostUSD, &s.Builds)
	if err != nil {
		return s, fmt.Errorf("reading the %s spend of project %s: %w", s.Month, id, err)
	}
	return s, nil
}

// ProjectSpends is ProjectSpend of every project in ids (every project when
// ids is nil) in one query, by project id; a project that spent nothing
// this month is absent.
func ProjectSpends(ctx context.Context, db DB, ids []string, at time.Time) (map[string]schema.ProjectSpend, error) {
	start, next := MonthOf(at)
	month := start.Format(MonthLayout)
	rows, err := db.Query(ctx, `SELECT project_id::text, sum(cost_usd), count(*) FROM builds
		WHERE ($1::uuid[] IS NULL OR project_id = ANY($1::uuid[])) AND cost_usd > 0 AND finished_at >= $2 AND finished_at < $3
		GROUP BY project_id`, ids, start, next)
	if err != nil {
		return nil, fmt.Errorf("reading the %s spend of projects: %w", month, err)
	}
	defer rows.Close()
	out := map[string]schema.ProjectSpend{}
	for rows.Next() {
		var id string
		s := schema.ProjectSpend{Month: month}
		if err := rows.Scan(&id, &s.CostUSD, &s.Builds); err != nil {
			return nil, fmt.Errorf("reading the %s spend of projects: %w", month, err)
		}
		out[id] = s
	}
	return out, rows.Err()
}
