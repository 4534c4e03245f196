package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ListFollowups returns the ids of build id's follow-ups, oldest first (ids
// are UUIDv7, so id order is creation order). One index range read
// (builds_parent); a build without follow-ups returns none.
func ListFollowups(ctx context.Context, db DB, id string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT id::text FROM builds WHERE parent_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("listing the follow-ups of build %s: %w", id, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing the follow-ups of build %s: %w", id, err)
	}
	return ids, nil
}
