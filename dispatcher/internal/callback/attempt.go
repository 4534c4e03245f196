package callback

import (
	"context"
	"fmt"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Outcomes of a callback attempt.
const (
	OutcomeDelivered = "delivered" // the receiver answered 2xx
	OutcomeRetry     = "retry"     // a retry is scheduled
	OutcomeFailed    = "failed"    // no retry: another 4xx, a refused address, or too old
)

type attempt struct {
	DeliveryID string
	BuildID    string
	StatusCode int
	Outcome    string
	Error      string
	Duration   time.Duration
}

// recordAttempt stores an attempt as the delivery's next one and returns its number.
func recordAttempt(ctx context.Context, db store.DB, a attempt) (int, error) {
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

// deliveryState reports whether a delivery already succeeded and how many
// attempts it has had.
func deliveryState(ctx context.Context, db store.DB, deliveryID string) (delivered bool, attempts int, err error) {
	err = db.QueryRow(ctx, `SELECT COALESCE(bool_or(outcome = 'delivered'), false), count(*)
		FROM callback_attempts WHERE delivery_id = $1`, deliveryID).Scan(&delivered, &attempts)
	if err != nil {
		return false, 0, fmt.Errorf("reading callback delivery %s: %w", deliveryID, err)
	}
	return delivered, attempts, nil
}

// ListAttempts returns every callback attempt of a build, oldest first.
func ListAttempts(ctx context.Context, db store.DB, buildID string) ([]schema.CallbackAttempt, error) {
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
