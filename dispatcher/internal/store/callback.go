package store

import (
	"context"
	"fmt"
	"time"

	"github.com/kilnbuild/kiln/schema"
)

// CallbackAttempt is one try at delivering a build's callback.
type CallbackAttempt struct {
	DeliveryID string
	BuildID    string
	StatusCode int    // 0: no answer
	Outcome    string // delivered, retry or failed
	Error      string
	Duration   time.Duration
}

// RecordCallbackAttempt stores a as its delivery's next attempt and returns
// that attempt's number.
func RecordCallbackAttempt(ctx context.Context, db DB, a CallbackAttempt) (int, error) {
	var n int
	err := db.QueryRow(ctx, `INSERT INTO callback_attempts
			(delivery_id, build_id, attempt, status_code, outcome, error, duration_ms)
		SELECT $1, $2, COALESCE(MAX(attempt), 0) + 1, $3, $4, $5, $6
		FROM callback_attempts WHERE delivery_id = $1
		RETURNING attempt`,
		a.DeliveryID, a.BuildID, a.StatusCode, a.Outcome, a.Error, a.Duration.Milliseconds()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("recording callback attempt of build %s: %w", a.BuildID, err)
	}
	return n, nil
}

// CallbackDelivery reports whether a delivery already succeeded (an attempt
// with outcome "delivered") and how many attempts it has had.
func CallbackDelivery(ctx context.Context, db DB, deliveryID string) (delivered bool, attempts int, err error) {
	err = db.QueryRow(ctx, `SELECT COALESCE(bool_or(outcome = 'delivered'), false), count(*)
		FROM callback_attempts WHERE delivery_id = $1`, deliveryID).Scan(&delivered, &attempts)
	if err != nil {
		return false, 0, fmt.Errorf("reading callback delivery %s: %w", deliveryID, err)
	}
	return delivered, attempts, nil
}

// ListCallbackAttempts returns every callback attempt of a build, oldest first.
func ListCallbackAttempts(ctx context.Context, db DB, buildID string) ([]schema.CallbackAttempt, error) {
	rows, err := db.Query(ctx, `SELECT delivery_id, attempt, status_code, outcome, error, duration_ms, created_at
		FROM callback_attempts WHERE build_id = $1 ORDER BY created_at, delivery_id, attempt`, buildID)
	if err != nil {
		return nil, fmt.Errorf("listing callback attempts of build %s: %w", buildID, err)
	}
	defer rows.Close()
	var out []schema.CallbackAttempt
	for rows.Next() {
		var a schema.CallbackAttempt
		if err := rows.Scan(&a.DeliveryID, &a.Attempt, &a.StatusCode, &a.Outcome, &a.Error, &a.DurationMS, &a.At); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
