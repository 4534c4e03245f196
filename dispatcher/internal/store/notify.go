package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// BuildEventSeq returns the sequence number of a build's latest event (0
// before its first): the events up to it are stored.
func BuildEventSeq(ctx context.Context, db DB, buildID string) (int64, error) {
	var seq int64
	err := db.QueryRow(ctx, `SELECT event_seq FROM builds WHERE id = $1`, buildID).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("build %s: %w", buildID, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("reading sequence of build %s: %w", buildID, err)
	}
	return seq, nil
}

// Listen makes conn, a connection of its own (not the pool's), receive the
// notifications of channel, and returns conn's current schema: a
// notification names the schema of the row that sent it.
func Listen(ctx context.Context, conn *pgx.Conn, channel string) (schema string, err error) {
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return "", fmt.Errorf("reading schema: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return "", fmt.Errorf("LISTEN %s: %w", channel, err)
	}
	return schema, nil
}
