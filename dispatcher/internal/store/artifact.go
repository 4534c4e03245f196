package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PutArtifact stores (or replaces: uploads are retried) a build's artifact.
func PutArtifact(ctx context.Context, db DB, buildID, path, sha string, content []byte) error {
	_, err := db.Exec(ctx, `INSERT INTO build_artifacts (build_id, path, size, sha256, content) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (build_id, path) DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, content = EXCLUDED.content`,
		buildID, path, len(content), sha, content)
	if err != nil {
		return fmt.Errorf("storing artifact %s of build %s: %w", path, buildID, err)
	}
	return nil
}

// GetArtifact returns an artifact's content and SHA-256.
func GetArtifact(ctx context.Context, db DB, buildID, path string) ([]byte, string, error) {
	var content []byte
	var sha string
	err := db.QueryRow(ctx, `SELECT content, sha256 FROM build_artifacts WHERE build_id = $1 AND path = $2`, buildID, path).Scan(&content, &sha)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", fmt.Errorf("artifact %s: %w", path, ErrNotFound)
	}
	return content, sha, err
}
