// Command backlog measures how Kiln drains a backlog, on kubebox: -builds
// builds queued across -projects projects under a global maximum in flight
// (KILN_MAX_IN_FLIGHT=-max-in-flight). Build pods run the stand-in runner
// (tests/standin-runner, prompt "succeed": it posts events and a successful
// result at once), so what bounds the drain is admission and pod start, not
// the builds' work.
//
// The limit, measured first in the same run: plain pods of the same runner
// binary (against a stub of the runner protocol) run to completion,
// -max-in-flight at a time, each created, run until Succeeded and deleted,
// as tests/kubebox's BenchmarkPodStartup creates its pods.
//
// The backlog is submitted as issue 13 asks: -big builds to one project
// first, then the rest round-robin over the other projects. From Postgres
// (builds.created_at, started_at, finished_at, admitted_seq) the bench prints
//   - the drain rate (completed builds/s, first submission to last
//     completion) and its ratio to the pod rate;
//   - FIFO violations: builds admitted before an older build (smaller
//     id: accepted earlier) of their project (builds.admitted_seq);
//   - how long each small project's first build waited, against one
//     admission round: the time a round-robin admission takes to give each
//     project with waiting builds one slot, (projects with waiting builds) /
//     (completed builds/s). Every project has waiting builds while the small
//     projects' first builds wait, so the round is -projects / drain rate;
//   - the big project's share of the builds started while small projects
//     still waited for their first (round-robin would give it about one in
//     -projects);
//   - queue waits (created → started) by project: p50, p99 and max of each,
//     and their spread across projects.
//
// Targets: drain rate ≥ 0.5 × the pod rate, FIFO violations = 0, the
// longest first-build wait of a small project ≤ one admission round.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

// drainGoal is the least drain rate, as a share of the pod rate, the
// backlog target holds Kiln to: a build costs a Job and a Secret on top of
// its pod, and two Postgres transactions and the runner protocol's requests
// on top of those, so the cluster's pace is not reachable, but a dispatcher
// that admits promptly keeps at least half of it.
const drainGoal = 0.5

type config struct {
	dbURL, dispatcherBin, capacity string
	builds, projects, big          int
	maxInFlight, maxConcurrent     int
	workers, submitters            int
	plainPods                      int
	timeout                        time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.dbURL, "database-url", benchproc.EnvOr("KILN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"), "database")
	flag.StringVar(&c.dispatcherBin, "dispatcher", "bin/dispatcher", "dispatcher binary")
	flag.IntVar(&c.builds, "builds", 2000, "builds in the backlog, all projects")
	flag.IntVar(&c.projects, "projects", 100, "projects the backlog spreads over")
	flag.IntVar(&c.big, "big", 800, "builds submitted to one project before any other project's")
	flag.IntVar(&c.maxInFlight, "max-in-flight", 50, "KILN_MAX_IN_FLIGHT: builds running or launching at once, all projects")
	flag.IntVar(&c.maxConcurrent, "max-concurrent", 0, "every project's max_concurrent (default: -max-in-flight, at most 100: only the global limit binds, so the admission alone decides who goes)")
	flag.IntVar(&c.workers, "workers", 10, "KILN_WORKERS: River dispatch workers")
	flag.IntVar(&c.submitters, "submitters", 16, "goroutines submitting the small projects' builds (each project's from one of them, in order; the big project's from one)")
	flag.IntVar(&c.plainPods, "plain-pods", 0, "plain pods the limit is measured with (default: 5 × -max-in-flight)")
	flag.StringVar(&c.capacity, "capacity", "cpu=64,memory=256Gi,pods=300", "what the kubebox Node reports: enough for -max-in-flight build pods (50m CPU each)")
	flag.DurationVar(&c.timeout, "timeout", 8*time.Minute, "how long the drain may take before the bench stops and reports what finished (and extrapolates): keeps a default run within about 10 minutes")
	flag.Parse()
	c.maxConcurrent = cmp.Or(c.maxConcurrent, min(c.maxInFlight, 100))
	c.plainPods = cmp.Or(c.plainPods, 5*c.maxInFlight)
	if c.projects < 2 || c.big < 1 || c.builds-c.big < c.projects-1 || c.maxInFlight < 1 {
		log.Fatal("need -projects ≥ 2, -big ≥ 1, -max-in-flight ≥ 1 and at least one build for every project besides the big one (-builds - -big ≥ -projects - 1)")
	}
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

func run(c config) error {
	ctx := context.Background()
	bin, err := filepath.Abs(c.dispatcherBin)
	if err != nil {
		return err
	}
	// The runner executable must sit where pods see the host's files: not
	// under /tmp, which build pods mount an emptyDir over.
	dir, err := os.MkdirTemp(kbtest.HostTempDir(), "bench-backlog-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	runner := filepath.Join(dir, "standin-runner")
	if out, err := exec.Command(benchproc.EnvOr("GO", "go"), "build", "-o", runner, "./tests/standin-runner").CombinedOutput(); err != nil {
		return fmt.Errorf("building the stand-in runner: %v\n%s", err, out)
	}

	kb, stopKB, err := kbtest.UpWith(kbtest.Options{Images: map[string]string{jobtemplates.DefaultImage: runner}, Capacity: c.capacity})
	if err != nil {
		return err
	}
	defer stopKB(true)
	if _, err := kb.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	benchproc.BuildsNamespace(ctx, kb.Client, "bench")

	fmt.Printf("bench-backlog: kubebox %s (node %s), %d builds over %d projects (%d to one project first), max in flight %d, max_concurrent %d, %d dispatch workers\n",
		kbtest.Version, c.capacity, c.builds, c.projects, c.big, c.maxInFlight, c.maxConcurrent, c.workers)

	// The limit: plain pods of the same runner binary, as many at once as Kiln may run.
	stubURL, stopStub, err := runnerStub()
	if err != nil {
		return err
	}
	cpu0 := benchproc.TakeCPU(0)
	podsPerSec, err := podRate(ctx, kb.Client, "plain", jobtemplates.DefaultImage, stubURL, c.plainPods, c.maxInFlight)
	plainCPU := cpu0.Until(benchproc.TakeCPU(0), c.plainPods)
	stopStub()
	if err != nil {
		return fmt.Errorf("measuring the pod rate: %w", err)
	}
	fmt.Printf("limit: %d plain runner pods, %d at a time, created → Succeeded: %.1f pods/s\n", c.plainPods, c.maxInFlight, podsPerSec)

	d, stopD, err := startDispatcher(ctx, c, bin, kb.Kubeconfig)
	if err != nil {
		return err
	}
	defer stopD()

	big, small, err := createProjects(d, c)
	if err != nil {
		return err
	}
	t0 := time.Now()
	cpu0 = benchproc.TakeCPU(d.pid)
	if err := submit(ctx, d.api, c, big, small); err != nil {
		return err
	}
	took := time.Since(t0)
	fmt.Printf("submitted %d builds in %s (%.0f/s)\n", c.builds, took.Round(time.Millisecond), float64(c.builds)/took.Seconds())

	stopped := drain(ctx, d.db, c, t0)
	bs, err := readBuilds(ctx, d.db)
	if err != nil {
		return err
	}
	done := 0
	for _, b := range bs {
		if b.status == "completed" {
			done++
		}
	}
	drainCPU := cpu0.Until(benchproc.TakeCPU(d.pid), done)
	fmt.Println("the machine (busy: 100% a core) and CPU ms per plain pod / per completed build, by process:")
	benchproc.CPUHeader(os.Stdout, "")
	plainCPU.Row(os.Stdout, "plain pods")
	drainCPU.Row(os.Stdout, "kiln drain")
	report(os.Stdout, c, bs, podsPerSec, stopped)
	return nil
}

// dispatcher is the real `dispatcher serve` under test, with its schema.
type dispatcher struct {
	api *client.Client
	db  *pgxpool.Pool // on the bench's schema, for the timings
	pid int
}

func startDispatcher(ctx context.Context, c config, bin, kubeconfig string) (*dispatcher, func(), error) {
	d := benchproc.StartOnCluster(ctx, bin, benchproc.ClusterOptions{DatabaseURL: c.dbURL, Kubeconfig: kubeconfig, Namespace: "bench",
		Name: "backlog", Env: []string{fmt.Sprintf("KILN_MAX_IN_FLIGHT=%d", c.maxInFlight), fmt.Sprintf("KILN_WORKERS=%d", c.workers)}})
	return &dispatcher{api: d.API, db: d.DB, pid: d.PID}, d.Stop, nil
}

// createProjects makes the big project and the small ones, all with
// c.maxConcurrent, and returns their ids.
func createProjects(d *dispatcher, c config) (big string, small []string, err error) {
	ctx := context.Background()
	mk := func(name string) (string, error) {
		p, err := d.api.CreateProject(ctx, schema.ProjectInput{Name: name, MaxConcurrent: c.maxConcurrent})
		if err != nil {
			return "", fmt.Errorf("creating project %s: %w", name, err)
		}
		return p.ID, nil
	}
	if big, err = mk(bigProject); err != nil {
		return "", nil, err
	}
	for i := 1; i < c.projects; i++ {
		id, err := mk(fmt.Sprintf("small-%03d", i))
		if err != nil {
			return "", nil, err
		}
		small = append(small, id)
	}
	return big, small, nil
}

// submit queues the backlog: c.big builds to the big project, and once they
// are all accepted, the rest round-robin over the small projects (so every
// small project's first build is among the first len(small) of them).
// Each project's builds are submitted one after another from one goroutine
// (c.submitters goroutines share the small projects): a build's id is
// taken before its commit, so two builds of one project submitted at once
// could commit in the other order, and admission — which sees only
// committed builds — would look like a FIFO violation that is not one.
func submit(ctx context.Context, api *client.Client, c config, big string, small []string) error {
	spec := schema.BuildSpec{Prompt: "succeed"}
	// phase submits builds 0..n-1, build i to project(i), in lanes
	// goroutines; lane(i) keeps each project's builds in one of them.
	phase := func(n, lanes int, project func(i int) string, lane func(i int) int) error {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var first error
		for g := range lanes {
			wg.Go(func() {
				for i := range n {
					if lane(i) != g {
						continue
					}
					// One attempt, no key: an error ends the bench.
					if _, err := api.SubmitOnce(ctx, project(i), spec, ""); err != nil {
						mu.Lock()
						first = cmp.Or(first, fmt.Errorf("submitting build %d: %w", i, err))
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		return first
	}
	if err := phase(c.big, 1, func(int) string { return big }, func(int) int { return 0 }); err != nil {
		return err
	}
	lanes := min(c.submitters, len(small))
	return phase(c.builds-c.big, lanes, func(i int) string { return small[i%len(small)] },
		func(i int) int { return i % len(small) % lanes })
}

// drain waits until every build is terminal or c.timeout has passed since
// t0, printing progress; it returns why it stopped early ("" when it did not).
func drain(ctx context.Context, db *pgxpool.Pool, c config, t0 time.Time) string {
	deadline := t0.Add(c.timeout)
	lastPrint := time.Now()
	for {
		var done, running, pending int
		err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE finished_at IS NOT NULL),
			count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending') FROM builds`).
			Scan(&done, &running, &pending)
		if err != nil {
			return "reading progress: " + err.Error()
		}
		if done == c.builds {
			return ""
		}
		if time.Since(lastPrint) >= 30*time.Second {
			lastPrint = time.Now()
			fmt.Printf("  after %s: %d terminal, %d running, %d pending\n", time.Since(t0).Round(time.Second), done, running, pending)
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("%d of %d builds terminal when -timeout %s ran out (%d running, %d pending)", done, c.builds, c.timeout, running, pending)
		}
		time.Sleep(time.Second)
	}
}

func readBuilds(ctx context.Context, db *pgxpool.Pool) ([]build, error) {
	rows, err := db.Query(ctx, `SELECT b.id::text, p.name, b.status, b.created_at, b.started_at, b.finished_at, COALESCE(b.admitted_seq, 0), b.reserved_at
		FROM builds b JOIN projects p ON p.id = b.project_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []build
	for rows.Next() {
		var b build
		var started, finished, reserved *time.Time
		if err := rows.Scan(&b.id, &b.project, &b.status, &b.created, &started, &finished, &b.admitted, &reserved); err != nil {
			return nil, err
		}
		if started != nil {
			b.started = *started
		}
		if finished != nil {
			b.finished = *finished
		}
		if reserved != nil {
			b.reserved = *reserved
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no builds in the database")
	}
	return out, nil
}
