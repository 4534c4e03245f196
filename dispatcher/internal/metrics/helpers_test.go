package metrics

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// InsertProjects adds n projects in status (a row as the store writes it).
func InsertProjects(tb testing.TB, pool *pgxpool.Pool, status string, n int) {
	tb.Helper()
	_, err := pool.Exec(context.Background(), `
		INSERT INTO projects (id, name, namespace, workdir, git_remote, git_branch, commit_author_name,
			commit_author_email, callback_secret, status)
		SELECT gen_random_uuid(), $1 || '-' || i, 'default', '/workspace', 'origin', 'main', 'Kiln',
			'kiln@localhost', 'kcs_test', $1
		FROM generate_series(1, $2) i`, status, n)
	require.NoError(tb, err)
}
