package pgtest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/schema/migrate"
)

func freshSchema(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "m_" + hex.EncodeToString(b)
	admin, err := pgxpool.New(context.Background(), pgtest.URL())
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.Exec(context.Background(), "CREATE SCHEMA "+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		c, err := pgxpool.New(context.Background(), pgtest.URL())
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
			c.Close()
		}
	})
	return name
}

// Two replicas migrating the same empty database at the same moment both
// succeed, the migrations are applied once, and a later run is a no-op.
func TestUpConcurrentAndIdempotent(t *testing.T) {
	t.Parallel()
	name := freshSchema(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([]migrate.Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		pool := pgtest.Pool(t, name, 4)
		wg.Go(func() { results[i], errs[i] = migrate.Up(ctx, pool, migrate.Options{Schema: name}) })
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	kiln := len(results[0].KilnApplied) + len(results[1].KilnApplied)
	river := len(results[0].RiverApplied) + len(results[1].RiverApplied)
	files, err := fs.Glob(schema.Migrations, "migrations/*.sql")
	require.NoError(t, err)
	assert.Equal(t, len(files), kiln, "kiln's migrations applied exactly once across both")
	assert.Positive(t, river)
	assert.True(t, len(results[0].RiverApplied) == 0 || len(results[1].RiverApplied) == 0, "river's applied by one of them")

	pool := pgtest.Pool(t, name, 2)
	again, err := migrate.Up(ctx, pool, migrate.Options{Schema: name})
	require.NoError(t, err)
	assert.Empty(t, again.KilnApplied)
	assert.Empty(t, again.RiverApplied)

	for _, table := range []string{"projects", "builds", "build_events", "api_tokens", "idempotency_keys", "river_job"} {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2`, name, table).Scan(&n))
		assert.Equal(t, 1, n, table)
	}
}
