// Package pgtest gives each test its own Postgres schema, migrated with
// Kiln's and River's migrations, on the database named by
// KILN_TEST_DATABASE_URL (default: kiln_test on 127.0.0.1). Tests stay
// isolated and can run in parallel; LISTEN/NOTIFY works inside a schema.
// It is for tests only.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnbuild/kiln/schema/migrate"
)

// DefaultURL is used when KILN_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"

// URL returns the test database URL.
func URL() string {
	if u := os.Getenv("KILN_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// DB is a migrated schema of the test database.
type DB struct {
	Pool   *pgxpool.Pool
	Schema string
	URL    string // base URL; pair it with Schema
}

// New creates a fresh schema, migrates it, and drops it when the test ends.
func New(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "t_" + hex.EncodeToString(b)

	admin, err := pgxpool.New(ctx, URL())
	if err != nil {
		t.Fatalf("pgtest: connecting to %s: %v (is PostgreSQL running? make postgres)", URL(), err)
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("pgtest: creating schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgxpool.New(ctx, URL()); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
			c.Close()
		}
	})
	pool := Pool(t, name, 0)
	if _, err := migrate.Up(ctx, pool, migrate.Options{Schema: name}); err != nil {
		t.Fatalf("pgtest: migrating: %v", err)
	}
	return &DB{Pool: pool, Schema: name, URL: URL()}
}

// Pool opens another pool on schema (maxConns 0: pgx default), closed at cleanup.
func Pool(t testing.TB, schema string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
