package metrics

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// projectsByStatus counts the projects by status. A deleted project keeps
// its row (status 'deleted', so its builds' audit rows stay readable) and is
// not counted. The table holds one row a project, so a scan is cheap.
// (It belongs beside store.ReadQueueStats; it is here until the store
// package reads it in that transaction.)
const projectsByStatus = `SELECT status, count(*) FROM projects WHERE status <> 'deleted' GROUP BY status`

// readProjects returns the number of projects by status.
func readProjects(ctx context.Context, pool *pgxpool.Pool) (map[string]int64, error) {
	rows, err := pool.Query(ctx, projectsByStatus)
	if err != nil {
		return nil, fmt.Errorf("counting projects by status: %w", err)
	}
	counts := map[string]int64{}
	var status string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		counts[status] = n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("counting projects by status: %w", err)
	}
	return counts, nil
}
