package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kilnbuild/kiln/schema"
)

// AppendEvent adds an event to a build's stream with the next sequence number.
func AppendEvent(ctx context.Context, db DB, buildID string, typ schema.EventType, payload any) (int64, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return 0, err
	}
	var seq int64
	err = db.QueryRow(ctx, `WITH u AS (
			UPDATE builds SET event_seq = event_seq + 1 WHERE id = $1 RETURNING id, event_seq)
		INSERT INTO build_events (build_id, seq, type, payload)
		SELECT id, event_seq, $2, $3 FROM u RETURNING seq`, buildID, string(typ), b).Scan(&seq)
	if err != nil {
		return 0, notFound(err, "build "+buildID)
	}
	return seq, nil
}

// ListEvents returns a build's events with seq > after, in order.
func ListEvents(ctx context.Context, db DB, buildID string, after int64, limit int) ([]schema.Event, error) {
	rows, err := db.Query(ctx, `SELECT seq, type, created_at, payload FROM build_events
		WHERE build_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, buildID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing events of build %s: %w", buildID, err)
	}
	defer rows.Close()
	out := []schema.Event{}
	for rows.Next() {
		var e schema.Event
		if err := rows.Scan(&e.Seq, &e.Type, &e.Time, &e.Payload); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
