package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Token is an API token's record; the token itself is never stored.
type Token struct {
	ID         string
	Name       string
	Admin      bool
	ProjectIDs []string
}

// TokenInfo is what `dispatcher token list` shows of a token: never the
// token or its hash.
type TokenInfo struct {
	Token
	Projects   []string   // names of ProjectIDs, in the same order
	CreatedAt  time.Time  //
	LastUsedAt *time.Time // nil: not used (or not since last use was recorded)
	RevokedAt  *time.Time // nil: live
}

// CreateToken stores a token's hash with its scope.
func CreateToken(ctx context.Context, db DB, t Token, hash []byte) error {
	if _, err := db.Exec(ctx, `INSERT INTO api_tokens (id, name, token_hash, admin) VALUES ($1, $2, $3, $4)`,
		t.ID, t.Name, hash, t.Admin); err != nil {
		return fmt.Errorf("inserting token %q: %w", t.Name, err)
	}
	for _, p := range t.ProjectIDs {
		if _, err := db.Exec(ctx, `INSERT INTO api_token_projects (token_id, project_id) VALUES ($1, $2)`, t.ID, p); err != nil {
			return fmt.Errorf("scoping token %q to project %s: %w", t.Name, p, err)
		}
	}
	return nil
}

// LookupToken returns the live token whose hash is hash, and records that
// it was used (at most once a minute, so a busy token costs no write).
func LookupToken(ctx context.Context, db DB, hash []byte) (*Token, error) {
	var t Token
	err := db.QueryRow(ctx, `WITH t AS (
			SELECT id, name, admin FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL
		), used AS (
			UPDATE api_tokens u SET last_used_at = now() FROM t
			WHERE u.id = t.id AND (u.last_used_at IS NULL OR u.last_used_at < now() - interval '1 minute')
		)
		SELECT t.id, t.name, t.admin,
			COALESCE(array_agg(p.project_id::text) FILTER (WHERE p.project_id IS NOT NULL), '{}')
		FROM t LEFT JOIN api_token_projects p ON p.token_id = t.id
		GROUP BY t.id, t.name, t.admin`, hash).Scan(&t.ID, &t.Name, &t.Admin, &t.ProjectIDs)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &t, err
}

// TokenLive reports whether the token with id exists and is not revoked.
func TokenLive(ctx context.Context, db DB, id string) (bool, error) {
	var live bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = $1 AND revoked_at IS NULL)`, id).Scan(&live)
	if err != nil {
		return false, fmt.Errorf("checking token %s: %w", id, err)
	}
	return live, nil
}

// ListTokens returns every token, oldest first.
func ListTokens(ctx context.Context, db DB) ([]TokenInfo, error) {
	rows, err := db.Query(ctx, `SELECT t.id, t.name, t.admin, t.created_at, t.last_used_at, t.revoked_at,
			COALESCE(array_agg(p.id::text ORDER BY p.name) FILTER (WHERE p.id IS NOT NULL), '{}'),
			COALESCE(array_agg(p.name ORDER BY p.name) FILTER (WHERE p.id IS NOT NULL), '{}')
		FROM api_tokens t
		LEFT JOIN api_token_projects tp ON tp.token_id = t.id
		LEFT JOIN projects p ON p.id = tp.project_id
		GROUP BY t.id
		ORDER BY t.created_at, t.id`)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TokenInfo, error) {
		var t TokenInfo
		err := row.Scan(&t.ID, &t.Name, &t.Admin, &t.CreatedAt, &t.LastUsedAt, &t.RevokedAt, &t.ProjectIDs, &t.Projects)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	return out, nil
}

// RevokeToken revokes the token with id and returns when it was revoked:
// now, or earlier if it already was (revoking is idempotent). A token
// that does not exist is ErrNotFound.
func RevokeToken(ctx context.Context, db DB, id string) (revokedAt time.Time, already bool, err error) {
	err = db.QueryRow(ctx, `WITH r AS (
			UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING revoked_at
		)
		SELECT revoked_at, false FROM r
		UNION ALL
		SELECT revoked_at, true FROM api_tokens WHERE id = $1 AND revoked_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM r)`,
		id).Scan(&revokedAt, &already)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("revoking token %s: %w", id, err)
	}
	return revokedAt, already, nil
}

// GrantProject adds a project to a token's scope.
func GrantProject(ctx context.Context, db DB, tokenID, projectID string) error {
	_, err := db.Exec(ctx, `INSERT INTO api_token_projects (token_id, project_id) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, tokenID, projectID)
	return err
}
