package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Token is an API token's record; the token itself is never stored.
type Token struct {
	ID         string
	Name       string
	Admin      bool
	ProjectIDs []string
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

// LookupToken returns the live token whose hash is hash.
func LookupToken(ctx context.Context, db DB, hash []byte) (*Token, error) {
	var t Token
	err := db.QueryRow(ctx, `SELECT t.id, t.name, t.admin,
			COALESCE(array_agg(p.project_id::text) FILTER (WHERE p.project_id IS NOT NULL), '{}')
		FROM api_tokens t LEFT JOIN api_token_projects p ON p.token_id = t.id
		WHERE t.token_hash = $1 AND t.revoked_at IS NULL
		GROUP BY t.id`, hash).Scan(&t.ID, &t.Name, &t.Admin, &t.ProjectIDs)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &t, err
}

// GrantProject adds a project to a token's scope.
func GrantProject(ctx context.Context, db DB, tokenID, projectID string) error {
	_, err := db.Exec(ctx, `INSERT INTO api_token_projects (token_id, project_id) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, tokenID, projectID)
	return err
}
