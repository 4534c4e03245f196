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

// KeyClaim is one submission's claim of an Idempotency-Key.
type KeyClaim struct {
	TokenID, Key string
	RequestHash  []byte
	BuildID      string
}

// ClaimIdempotencyKeys binds each claim's key to its build in one statement
// and reports which claims won. A key already bound, or claimed by an
// earlier claim in the same call, is not won. The builds themselves may be
// written later in the transaction (the foreign key is checked at commit).
func ClaimIdempotencyKeys(ctx context.Context, db DB, claims []KeyClaim) ([]bool, error) {
	tokens := make([]string, len(claims))
	keys := make([]string, len(claims))
	hashes := make([][]byte, len(claims))
	builds := make([]string, len(claims))
	for i, c := range claims {
		tokens[i], keys[i], hashes[i], builds[i] = c.TokenID, c.Key, c.RequestHash, c.BuildID
	}
	rows, err := db.Query(ctx, `INSERT INTO idempotency_keys (token_id, key, request_hash, build_id)
		SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::uuid[])
		ON CONFLICT DO NOTHING RETURNING build_id::text`, tokens, keys, hashes, builds)
	if err != nil {
		return nil, err
	}
	won := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		won[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]bool, len(claims))
	for i, c := range claims {
		out[i] = won[c.BuildID]
	}
	return out, nil
}
