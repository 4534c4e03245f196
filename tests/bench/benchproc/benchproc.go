// Package benchproc runs the dispatcher binary for the benchmarks in
// tests/bench: a serving process on a free loopback port, its subcommands,
// and the project a benchmark submits to. It measures nothing itself.
package benchproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/schema/migrate"
)

// Serve runs `dispatcher serve --workers 0` (API only) on a free loopback
// port, waits for /readyz, and returns its URL and a stop function.
func Serve(bin, dbURL, schema, logLevel string) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Check(err)
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--listen-addr", addr, "--database-url", dbURL, "--db-schema", schema,
		"--log-level", logLevel, "--workers", "0")
	cmd.Stderr = os.Stderr
	Check(cmd.Start())
	url := "http://" + addr
	WaitReady(url, 100)
	return url, func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}

// WaitReady waits for the dispatcher at url to answer /readyz, polling every
// 100ms at most tries times.
func WaitReady(url string, tries int) {
	c := &client.Client{BaseURL: url}
	for i := 0; ; i++ {
		if c.Ready(context.Background()) == nil {
			return
		}
		if i > tries {
			log.Fatal("dispatcher did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Run runs a dispatcher subcommand and returns its trimmed output.
func Run(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		log.Fatalf("%s %v: %v", bin, args, err)
	}
	return strings.TrimSpace(string(out))
}

// CreateProject creates a project with an admin token and returns its id.
func CreateProject(url, adminToken string, in schema.ProjectInput) string {
	c := &client.Client{BaseURL: url, Token: adminToken}
	p, err := c.CreateProject(context.Background(), in)
	if err != nil {
		log.Fatalf("creating project %s: %v", in.Name, err)
	}
	return p.ID
}

// EnvOr returns $k, or def when it is empty.
func EnvOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Check ends the benchmark on an error.
func Check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// Schema creates a fresh schema on dbURL, applies Kiln's and River's
// migrations there, and returns its name, a pool on it (maxConns
// connections) and a function that closes the pool and drops the schema.
func Schema(ctx context.Context, dbURL string, maxConns int32) (string, *pgxpool.Pool, func()) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "bench_" + hex.EncodeToString(b)
	admin, err := pgxpool.New(ctx, dbURL)
	Check(err)
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+name)
	Check(err)
	cfg, err := pgxpool.ParseConfig(dbURL)
	Check(err)
	cfg.ConnConfig.RuntimeParams["search_path"] = name
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	Check(err)
	_, err = migrate.Up(ctx, pool, migrate.Options{Schema: name})
	Check(err)
	return name, pool, func() {
		pool.Close()
		_, _ = admin.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
		admin.Close()
	}
}

// Measure runs op from c goroutines (given their index) for d and returns
// successful operations per second. A failed operation ends the benchmark:
// a rate that counts only what succeeded would flatter.
func Measure(c int, d time.Duration, op func(w int) error) float64 {
	var n, failed atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := op(w); err != nil {
					if failed.Add(1) == 1 {
						log.Printf("operation failed: %v", err)
					}
					continue
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		log.Fatalf("%d operations failed", f)
	}
	return float64(n.Load()) / time.Since(start).Seconds()
}
