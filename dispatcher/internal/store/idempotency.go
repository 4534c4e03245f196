package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// IdempotencyRecord is what an Idempotency-Key is bound to.
type IdempotencyRecord struct {
	RequestHash []byte
	BuildID     string
}

// ClaimIdempotencyKey binds (tokenID, key) to buildID inside the build's
// transaction. It returns false when the key is already bound; a concurrent
// claim of the same key waits for the other transaction to end first.
func ClaimIdempotencyKey(ctx context.Context, db DB, tokenID, key string, hash []byte, buildID string) (bool, error) {
	tag, err := db.Exec(ctx, `INSERT INTO idempotency_keys (token_id, key, request_hash, build_id)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, tokenID, key, hash, buildID)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// GetIdempotencyKey returns the record bound to (tokenID, key), or ErrNotFound.
func GetIdempotencyKey(ctx context.Context, db DB, tokenID, key string) (*IdempotencyRecord, error) {
	var r IdempotencyRecord
	err := db.QueryRow(ctx, `SELECT request_hash, build_id FROM idempotency_keys WHERE token_id = $1 AND key = $2`,
		tokenID, key).Scan(&r.RequestHash, &r.BuildID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &r, err
}
