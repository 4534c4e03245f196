// Command intake measures build intake: accepted builds per second through
// the real HTTP API (audit row + River job in one transaction) at 1, 8 and 32
// concurrent clients, against a baseline measured in the same run on the same
// database at the same concurrency: a plain single-row INSERT transaction in
// a pgx loop. It prints both rates and their ratio. Target: ≥ 0.5 at 32.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

func main() {
	dbURL := flag.String("database-url", benchproc.EnvOr("KILN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"), "database to measure on")
	dispatcherBin := flag.String("dispatcher", "bin/dispatcher", "the dispatcher binary to measure")
	dur := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	flag.Parse()
	ctx := context.Background()

	schemaName, pool, drop := benchproc.Schema(ctx, *dbURL, 40)
	defer drop()
	_, err := pool.Exec(ctx, `CREATE TABLE plain (id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`)
	benchproc.Check(err)

	srvURL, stop := benchproc.Serve(*dispatcherBin, *dbURL+"&pool_max_conns=40", schemaName, "warn")
	defer stop()
	adminTok := benchproc.Run(*dispatcherBin, "token", "create", "--name", "bench-admin", "--admin", "--database-url", *dbURL, "--db-schema", schemaName)
	projectID := benchproc.CreateProject(srvURL, adminTok, schema.ProjectInput{Name: "bench"})
	tok := benchproc.Run(*dispatcherBin, "token", "create", "--name", "bench", "--project", projectID, "--database-url", *dbURL, "--db-schema", schemaName)

	spec := schema.BuildSpec{Prompt: "Update the landing page heading to say {{name}}.", Variables: map[string]string{"name": "Acme"},
		AutoCommit: true, AutoPush: true, CallbackURL: "https://bots.example/cb"}
	body, err := json.Marshal(spec) // the baseline inserts the same bytes
	benchproc.Check(err)
	api := &client.Client{BaseURL: srvURL, Token: tok, HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}

	var keySeq atomic.Int64
	submit := func(keyed bool) error {
		key := ""  // one attempt each: a failure ends the benchmark
		if keyed { // what a careful bot sends: a fresh key per build, kept for its retries
			key = fmt.Sprintf("bench-%d", keySeq.Add(1))
		}
		_, err := api.SubmitOnce(ctx, projectID, spec, key)
		return err
	}
	plainOp := func() error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO plain (payload) VALUES ($1)`, body); err != nil {
			_ = tx.Rollback(ctx)
			return err
		}
		return tx.Commit(ctx)
	}

	fmt.Printf("bench-intake: %s per measurement, database %s (schema %s)\n", *dur, pool.Config().ConnConfig.Database, schemaName)
	fmt.Printf("%-8s %16s %16s %8s\n", "clients", "intake builds/s", "plain inserts/s", "ratio")
	var at32 float64
	for _, c := range []int{1, 8, 32} {
		plain := benchproc.Measure(c, *dur, func(int) error { return plainOp() })
		kiln := benchproc.Measure(c, *dur, func(int) error { return submit(false) })
		fmt.Printf("%-8d %16.0f %16.0f %8.2f\n", c, kiln, plain, kiln/plain)
		if c == 32 {
			at32 = kiln / plain
			keyed := benchproc.Measure(c, *dur, func(int) error { return submit(true) })
			fmt.Printf("%-8s %16.0f %16.0f %8.2f   (each with an Idempotency-Key)\n", "32 keyed", keyed, plain, keyed/plain)
		}
	}
	var builds, jobs int
	benchproc.Check(pool.QueryRow(ctx, `SELECT count(*) FROM builds`).Scan(&builds))
	benchproc.Check(pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&jobs))
	fmt.Printf("check: %d audit rows, %d River jobs (must be equal)\n", builds, jobs)
	benchproc.Target(os.Stdout, "intake builds/s vs plain INSERT at 32 clients", fmt.Sprintf("%.2f", at32), "≥ 0.5", at32 >= 0.5)
	benchproc.Target(os.Stdout, "River jobs minus audit rows", fmt.Sprintf("%d", jobs-builds), "0", builds == jobs)
	if builds != jobs {
		os.Exit(1)
	}
}
