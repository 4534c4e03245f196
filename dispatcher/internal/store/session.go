package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Session is a console sign-in: the token it acts as, its CSRF token and
// when it ends.
type Session struct {
	Token
	CSRF      string
	ExpiresAt time.Time
}

// CreateSession stores a session of the token with tokenID under the hash
// of its id, and drops the sessions that have expired.
func CreateSession(ctx context.Context, db DB, hash []byte, tokenID, csrf string, expires time.Time) error {
	if _, err := db.Exec(ctx, `WITH gone AS (DELETE FROM console_sessions WHERE expires_at < now())
		INSERT INTO console_sessions (id_hash, token_id, csrf, expires_at) VALUES ($1, $2, $3, $4)`,
		hash, tokenID, csrf, expires); err != nil {
		return fmt.Errorf("storing a console session: %w", err)
	}
	return nil
}

// LookupSession returns the session whose id hashes to hash while it has
// not expired and its token is live; otherwise ErrNotFound. It records
// that the token was used, as LookupToken does.
func LookupSession(ctx context.Context, db DB, hash []byte) (*Session, error) {
	var s Session
	err := db.QueryRow(ctx, `WITH s AS (
			SELECT t.id, t.name, t.admin, s.csrf, s.expires_at, t.last_used_at
			FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id
			WHERE s.id_hash = $1 AND s.expires_at > now() AND t.revoked_at IS NULL
		), used AS (
			UPDATE api_tokens u SET last_used_at = now() FROM s
			WHERE u.id = s.id AND (s.last_used_at IS NULL OR s.last_used_at < now() - interval '1 minute')
		)
		SELECT s.id, s.name, s.admin, s.csrf, s.expires_at,
			COALESCE((SELECT array_agg(p.project_id::text) FROM api_token_projects p WHERE p.token_id = s.id), '{}')
		FROM s`, hash).
		Scan(&s.ID, &s.Name, &s.Admin, &s.CSRF, &s.ExpiresAt, &s.ProjectIDs)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("looking up a console session: %w", err)
	}
	return &s, nil
}

// DeleteSession ends the session whose id hashes to hash (signing out); it
// is not an error when there is none.
func DeleteSession(ctx context.Context, db DB, hash []byte) error {
	if _, err := db.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, hash); err != nil {
		return fmt.Errorf("deleting a console session: %w", err)
	}
	return nil
}
