// Command events measures Kiln's build events end to end, with baselines
// measured in the same run on the same database:
//
//   - ingestion: events stored per second through the runner protocol
//     (POST /runner/v1/builds/{id}/events, batches of 50, stored exactly once,
//     with the NOTIFY trigger), at 1 and 8 concurrent runners, against a plain
//     multi-row INSERT of the same rows into an untriggered table;
//   - fan-out lag: 100 SSE watchers on one dispatcher replica follow a build
//     whose events a runner posts to another replica; lag is from just before
//     the POST to the watcher reading the event (p50, p99), against the
//     Postgres NOTIFY round trip alone (pg_notify on one connection to
//     LISTEN on another).
//
// No issue states goals for these, so the target lines hold them to ratios
// against the same run's baselines, near what earlier runs measured: the
// runner path at 8 runners stores at least 0.2 of the plain INSERT's rate
// (HTTP, auth, validation, exactly-once and the NOTIFY trigger cost at most
// 5×), and the fan-out p99 is at most 10× the bare NOTIFY round trip's
// (SSE, the hub and the second replica add at most an order of magnitude).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

func main() {
	dbURL := flag.String("database-url", benchproc.EnvOr("KILN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"), "database to measure on")
	bin := flag.String("dispatcher", "bin/dispatcher", "the dispatcher binary to measure")
	dur := flag.Duration("duration", 4*time.Second, "how long each ingestion measurement runs")
	watchers := flag.Int("watchers", 100, "SSE watchers for the fan-out measurement")
	events := flag.Int("events", 300, "events posted during the fan-out measurement")
	flag.Parse()
	ctx := context.Background()

	schemaName, pool, drop := benchproc.Schema(ctx, *dbURL, 20)
	defer drop()
	_, err := pool.Exec(ctx, `CREATE TABLE plain_events (build_id uuid NOT NULL, seq bigint NOT NULL, type text NOT NULL,
		payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (build_id, seq))`)
	benchproc.Check(err)

	ingest, stopA := benchproc.Serve(*bin, *dbURL+"&pool_max_conns=30", schemaName, "error")
	defer stopA()
	follow, stopB := benchproc.Serve(*bin, *dbURL+"&pool_max_conns=30", schemaName, "error")
	defer stopB()
	adminTok := benchproc.Run(*bin, "token", "create", "--name", "bench-admin", "--admin", "--database-url", *dbURL, "--db-schema", schemaName)
	projectID := benchproc.CreateProject(ingest, adminTok, schema.ProjectInput{Name: "bench"})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	admin := &client.Client{BaseURL: ingest, Token: adminTok, HTTP: hc}

	fmt.Printf("bench-events: database %s (schema %s), two dispatcher replicas\n\n", pool.Config().ConnConfig.Database, schemaName)

	// Ingestion.
	const batch = 50
	fmt.Printf("ingestion, batches of %d events, %s each\n", batch, *dur)
	fmt.Printf("%-9s %22s %22s %8s\n", "runners", "runner path events/s", "plain INSERT events/s", "ratio")
	var ingestRatio float64 // at 8 runners
	for _, c := range []int{1, 8} {
		runners := make([]*runner, c)
		for i := range runners {
			runners[i] = newRunner(ctx, hc, admin, projectID, pool)
		}
		plainIDs := make([]string, c)
		plainSeq := make([]int64, c)
		for i := range plainIDs {
			plainIDs[i] = runners[i].id
		}
		plain := benchproc.Measure(c, *dur, func(w int) error {
			base := plainSeq[w]
			plainSeq[w] += batch
			types, payloads := batchRows(batch)
			_, err := pool.Exec(ctx, `INSERT INTO plain_events (build_id, seq, type, payload)
				SELECT $1, $2 + e.ord, e.type, e.payload::jsonb
				FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS e(type, payload, ord)`,
				plainIDs[w], base, types, payloads)
			return err
		}) * batch
		kiln := benchproc.Measure(c, *dur, func(w int) error { return runners[w].post(batch, nil) }) * batch
		fmt.Printf("%-9d %22.0f %22.0f %8.2f\n", c, kiln, plain, kiln/plain)
		ingestRatio = kiln / plain
	}

	// Fan-out lag.
	r := newRunner(ctx, hc, admin, projectID, pool)
	lags := make([][]time.Duration, *watchers)
	var wg sync.WaitGroup
	ready := make(chan struct{}, *watchers)
	for i := range *watchers {
		wg.Go(func() { lags[i] = watch(&client.Client{BaseURL: follow, Token: adminTok}, r.id, ready) })
	}
	for range *watchers {
		<-ready
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	for range *events {
		benchproc.Check(r.post(1, func() string { return strconv.FormatInt(time.Now().UnixNano(), 10) }))
		time.Sleep(2 * time.Millisecond)
	}
	posted := time.Since(start)
	if _, err := admin.Cancel(ctx, r.id, ""); err != nil {
		log.Fatalf("cancelling the watched build: %v", err)
	}
	wg.Wait()
	var all []time.Duration
	short := 0
	for _, l := range lags {
		if len(l) != *events {
			short++
		}
		all = append(all, l...)
	}
	base := notifyRoundTrip(ctx, pool.Config(), *events)
	fmt.Printf("\nfan-out to %d SSE watchers on another replica, %d events over %s (%d deliveries)\n",
		*watchers, *events, posted.Round(time.Millisecond), len(all))
	fmt.Printf("%-34s %10s %10s\n", "", "p50", "p99")
	fmt.Printf("%-34s %10s %10s\n", "post → watcher (runner path, SSE)", pct(all, 50), pct(all, 99))
	fmt.Printf("%-34s %10s %10s\n", "baseline: NOTIFY round trip", pct(base, 50), pct(base, 99))
	fmt.Printf("%-34s %10.1f %10.1f\n", "ratio", ratio(all, base, 50), ratio(all, base, 99))
	if short > 0 {
		log.Fatalf("%d watchers missed events", short)
	}
	fmt.Printf("check: every watcher got all %d events in order\n", *events)
	benchproc.Target(os.Stdout, "runner path events/s vs plain INSERT at 8 runners", fmt.Sprintf("%.2f", ingestRatio), "≥ 0.2", ingestRatio >= 0.2)
	fan := ratio(all, base, 99)
	benchproc.Target(os.Stdout, fmt.Sprintf("fan-out p99 to %d SSE watchers vs NOTIFY round trip", *watchers), fmt.Sprintf("%.1f", fan), "≤ 10", fan <= 10)
}

func batchRows(n int) (types, payloads []string) {
	types, payloads = make([]string, n), make([]string, n)
	for i := range n {
		types[i] = "agent_text"
		payloads[i] = `{"text":"Looking at src/app.tsx to change the heading"}`
	}
	return types, payloads
}

// runner posts events for one build as its jobrunner would.
type runner struct {
	hc      *http.Client
	url     string
	id      string
	token   string
	batchNo int64
}

func newRunner(ctx context.Context, hc *http.Client, admin *client.Client, projectID string, pool *pgxpool.Pool) *runner {
	acc, err := admin.Submit(ctx, projectID, schema.BuildSpec{Prompt: "bench"}, "")
	benchproc.Check(err)
	// What the launcher does: a runner token, kept only as its hash.
	tok := "kiln_" + randHex(16)
	h := sha256.Sum256([]byte(tok))
	_, err = pool.Exec(ctx, `UPDATE builds SET runner_token_hash = $2 WHERE id = $1`, acc.TaskID, h[:])
	benchproc.Check(err)
	return &runner{hc: hc, url: admin.BaseURL + schema.RunnerAPIPrefix + acc.TaskID + "/events", id: acc.TaskID, token: tok}
}

// post posts a batch of n agent_text events: text(), or a line of the
// agent's without text.
func (r *runner) post(n int, text func() string) error {
	r.batchNo++
	b := schema.EventBatch{Batch: r.batchNo, Events: make([]schema.EventInput, n)}
	for i := range b.Events {
		p := schema.AgentTextPayload{Text: "Looking at src/app.tsx to change the heading"}
		if text != nil {
			p.Text = text()
		}
		e, err := schema.NewEventInput(time.Now(), p)
		if err != nil {
			return err
		}
		b.Events[i] = e
	}
	body, _ := json.Marshal(b)
	req, _ := http.NewRequest("POST", r.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+r.token)
	res, err := r.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var ack schema.EventBatchAck
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		return fmt.Errorf("events: HTTP %d: %s", res.StatusCode, b)
	}
	if err := json.NewDecoder(res.Body).Decode(&ack); err != nil {
		return err
	}
	if ack.Stored != n {
		return fmt.Errorf("stored %d of %d", ack.Stored, n)
	}
	return nil
}

// watch follows a build over SSE and returns the lag of every timed event
// (an agent_text whose text is the time it was posted at).
func watch(c *client.Client, id string, ready chan<- struct{}) []time.Duration {
	var lags []time.Duration
	var last int64
	signalled := false
	_, err := c.Watch(context.Background(), id, client.WatchOptions{Show: func(e schema.Event) {
		now := time.Now()
		if !signalled {
			signalled = true
			ready <- struct{}{}
		}
		if e.Seq != last+1 {
			log.Fatalf("watcher: event %d after %d", e.Seq, last)
		}
		last = e.Seq
		if p, ok := schema.PayloadAs[schema.AgentTextPayload](e); ok {
			if t, err := strconv.ParseInt(p.Text, 10, 64); err == nil && t > 0 {
				lags = append(lags, now.Sub(time.Unix(0, t)))
			}
		}
	}})
	benchproc.Check(err)
	return lags
}

// notifyRoundTrip measures pg_notify on one connection to LISTEN on another.
func notifyRoundTrip(ctx context.Context, cfg *pgxpool.Config, n int) []time.Duration {
	l, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	benchproc.Check(err)
	defer l.Close(ctx)
	s, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	benchproc.Check(err)
	defer s.Close(ctx)
	_, err = l.Exec(ctx, "LISTEN bench_round_trip")
	benchproc.Check(err)
	out := make([]time.Duration, 0, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(out) < n {
			m, err := l.WaitForNotification(ctx)
			benchproc.Check(err)
			t, _ := strconv.ParseInt(m.Payload, 10, 64)
			out = append(out, time.Since(time.Unix(0, t)))
		}
	}()
	for range n {
		_, err := s.Exec(ctx, "SELECT pg_notify('bench_round_trip', $1)", strconv.FormatInt(time.Now().UnixNano(), 10))
		benchproc.Check(err)
		time.Sleep(2 * time.Millisecond)
	}
	<-done
	return out
}

func pct(d []time.Duration, p int) string {
	return percentile(d, p).Round(10 * time.Microsecond).String()
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ratio(a, b []time.Duration, p int) float64 {
	return float64(percentile(a, p)) / float64(max(percentile(b, p), time.Microsecond))
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
