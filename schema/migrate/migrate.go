// Package migrate applies Kiln's SQL migrations (goose) and River's own
// migrations (rivermigrate) under one Postgres advisory lock, so two replicas
// running `dispatcher migrate` at the same moment serialize instead of racing.
// It is the migrate entry point of package schema; it is not a general runner.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/kilnbuild/kiln/schema"
)

// lockKey is the advisory lock taken for the whole migration ("kiln" in ASCII).
const lockKey int64 = 0x6b696c6e

// Result says what one Up call changed.
type Result struct {
	KilnApplied  []int64 // goose versions applied by this call
	RiverApplied []int   // River versions applied by this call
}

// Options configures Up. The zero value migrates the search_path schema.
type Options struct {
	// Schema is the Postgres schema River's tables go in; empty means search_path.
	// Kiln's tables always follow search_path.
	Schema string
	Logger *slog.Logger // default: discard
}

// Up applies every pending Kiln and River migration. It is idempotent.
func Up(ctx context.Context, pool *pgxpool.Pool, opts Options) (Result, error) {
	var res Result
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("acquiring connection for migration lock: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return res, fmt.Errorf("taking migration lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey)
	}()

	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	applied, err := upKiln(ctx, db, logger)
	if err != nil {
		return res, err
	}
	res.KilnApplied = applied

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: opts.Schema, Logger: logger})
	if err != nil {
		return res, fmt.Errorf("creating river migrator: %w", err)
	}
	rr, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return res, fmt.Errorf("applying river migrations: %w", err)
	}
	for _, v := range rr.Versions {
		res.RiverApplied = append(res.RiverApplied, v.Version)
	}
	logger.Info("migrations applied", "kiln", res.KilnApplied, "river", res.RiverApplied)
	return res, nil
}

func upKiln(ctx context.Context, db *sql.DB, logger *slog.Logger) ([]int64, error) {
	fsys, err := fs.Sub(schema.Migrations, "migrations")
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName("kiln_schema_version"),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(logger))
	if err != nil {
		return nil, fmt.Errorf("creating goose provider: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("applying kiln migrations: %w", err)
	}
	versions := make([]int64, 0, len(results))
	for _, r := range results {
		versions = append(versions, r.Source.Version)
	}
	return versions, nil
}
