package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PutArtifact stores (or replaces: uploads are retried) a build's artifact.
// Call it in a transaction: it locks the build's row. A terminal build is
// an *EndedError (ErrTerminal); an upload that would take the build past
// caps (a replaced path counts once, with its new size) is a *CapError, and
// nothing is stored.
func PutArtifact(ctx context.Context, db DB, buildID, path, sha string, content []byte, caps ArtifactCaps) error {
	if _, err := lockActiveBuild(ctx, db, buildID); err != nil {
		return err
	}
	var n, size int64
	if err := db.QueryRow(ctx, `SELECT count(*), COALESCE(sum(size), 0)::bigint FROM build_artifacts WHERE build_id = $1 AND path <> $2`,
		buildID, path).Scan(&n, &size); err != nil {
		return fmt.Errorf("counting artifacts of build %s: %w", buildID, err)
	}
	if caps.MaxArtifacts > 0 && n+1 > caps.MaxArtifacts {
		return &CapError{Cap: CapArtifacts, Limit: caps.MaxArtifacts, Have: n, Add: 1}
	}
	if caps.MaxBytes > 0 && size+int64(len(content)) > caps.MaxBytes {
		return &CapError{Cap: CapArtifactBytes, Limit: caps.MaxBytes, Have: size, Add: int64(len(content))}
	}
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
