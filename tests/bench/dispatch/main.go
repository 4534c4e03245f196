// Command dispatch measures how long Kiln takes from a build submission to
// its Kubernetes Job existing, at 5 and 20 builds per second, on kubebox, and
// in the same run the latency of a plain Job create through client-go of the
// same Job spec. Both are observed the same way: a watch on the namespace
// sees the Job's ADDED event. It prints p50/p99 of both and their ratio.
// Targets: Kiln's p99 within 3× the plain create's at 5 builds/s (issue 4),
// within 2× at 20 builds/s (issue 13).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
	"github.com/kilnbuild/kiln/tests/childproc"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

func main() {
	dbURL := flag.String("database-url", benchproc.EnvOr("KILN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"), "database")
	dispatcherBin := flag.String("dispatcher", "bin/dispatcher", "dispatcher binary")
	runnerBin := flag.String("runner", "", "executable build pods run (default: /bin/true)")
	dur := flag.Duration("duration", 20*time.Second, "how long each rate is offered (at 5/s, 20 s gives 100 samples: a p99 that is not just the maximum)")
	flag.Parse()
	ctx := context.Background()
	runner := *runnerBin
	if runner == "" {
		runner = "/bin/true"
	}
	abs, err := filepath.Abs(*dispatcherBin)
	benchproc.Check(err)

	c, stop, err := kbtest.Up(map[string]string{"kilnbuild/kiln-jobrunner:latest": runner})
	benchproc.Check(err)
	defer stop(true)
	ns := "bench"
	_, err = c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	benchproc.Check(err)
	_, err = c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kiln-runner"}}, metav1.CreateOptions{})
	benchproc.Check(err)

	schemaName := fmt.Sprintf("bench_dispatch_%d", time.Now().Unix())
	admin, err := pgxpool.New(ctx, *dbURL)
	benchproc.Check(err)
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+schemaName)
	benchproc.Check(err)
	defer func() { _, _ = admin.Exec(context.Background(), "DROP SCHEMA "+schemaName+" CASCADE"); admin.Close() }()

	env := append(os.Environ(), "KILN_DATABASE_URL="+*dbURL+"&pool_max_conns=20", "KILN_DB_SCHEMA="+schemaName)
	run := func(args ...string) string {
		cmd := exec.Command(abs, args...)
		cmd.Env = env
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		benchproc.Check(err)
		return strings.TrimSpace(string(out))
	}
	run("migrate")
	tok := run("token", "create", "--name", "bench", "--admin")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	benchproc.Check(err)
	addr := ln.Addr().String()
	ln.Close()
	srv := exec.Command(abs, "serve")
	srv.Env = append(env, "KILN_LISTEN_ADDR="+addr, "KILN_KUBECONFIG="+c.Kubeconfig, "KILN_BUILD_NAMESPACE="+ns,
		"KILN_MAX_IN_FLIGHT=10000", "KILN_RATE_WRITES=0", "KILN_RATE_READS=0", "KILN_LOG_LEVEL="+benchproc.EnvOr("BENCH_LOG_LEVEL", "warn"), "KILN_WORKERS=20")
	srv.Stderr = os.Stderr
	benchproc.Check(childproc.Start(srv))
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	base := "http://" + addr
	benchproc.WaitReady(base, 300)
	api := &client.Client{BaseURL: base, Token: tok}
	// submit submits a build that ends without a result: one attempt, no key,
	// as before the client library measured it.
	submit := func(project string) string {
		acc, err := api.SubmitOnce(ctx, project, schema.BuildSpec{Prompt: "no-result"}, "")
		benchproc.Check(err)
		return acc.TaskID
	}

	// Projects enough that the per-project limit never binds.
	var projects []string
	for i := range 20 {
		projects = append(projects, benchproc.CreateProject(base, tok, schema.ProjectInput{Name: fmt.Sprintf("p%d", i), MaxConcurrent: 100}))
	}

	// One watch observes every Job, Kiln's and the baseline's.
	w, err := c.Client.BatchV1().Jobs(ns).Watch(ctx, metav1.ListOptions{})
	benchproc.Check(err)
	defer w.Stop()
	var mu sync.Mutex
	seen := map[string]time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			if m, ok := ev.Object.(metav1.Object); ok {
				mu.Lock()
				seen[m.GetName()] = time.Now()
				mu.Unlock()
			}
		}
	}()
	waitSeen := func(name string, deadline time.Time) (time.Time, bool) {
		for time.Now().Before(deadline) {
			mu.Lock()
			t, ok := seen[name]
			mu.Unlock()
			if ok {
				return t, true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Time{}, false
	}

	tmpl, ok := jobtemplates.Embedded().Get("default")
	if !ok {
		log.Fatal("no default template")
	}
	// Warm up both paths (River leadership, connection pools, informers).
	for i := range 10 {
		id := submit(projects[i%len(projects)])
		if _, ok := waitSeen(jobtemplates.JobName(id), time.Now().Add(60*time.Second)); !ok {
			log.Fatal("warm-up build got no Job")
		}
	}
	fmt.Printf("bench-dispatch: kubebox %s, %s per rate\n", kbtest.Version, *dur)
	fmt.Printf("%-6s %-10s %6s %10s %10s\n", "rate/s", "path", "n", "p50", "p99")
	type result struct {
		rate  int
		ratio float64
	}
	var results []result
	for _, rate := range []int{5, 20} {
		n := int(dur.Seconds()) * rate
		// Baseline: the same Job, created directly.
		plain := offer(rate, n, func(i int) (time.Duration, bool) {
			id := fmt.Sprintf("01a2%04x-0000-7000-8000-%012x", rate, i)
			job, secret, err := jobtemplates.Render(jobtemplates.RenderInput{
				Build:   schema.Build{ID: id, ProjectID: projects[0], Spec: schema.BuildSpec{Prompt: "x", Template: "default"}},
				Project: schema.Project{ID: projects[0], Name: "p0"}, Template: tmpl, Namespace: ns,
				DispatcherURL: base, RunnerToken: "t"})
			benchproc.Check(err)
			// Not Kiln's: keep the dispatcher's watcher out of it.
			delete(job.Labels, jobtemplates.LabelManagedBy)
			delete(job.Spec.Template.Labels, jobtemplates.LabelManagedBy)
			start := time.Now()
			created, err := c.Client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
			if err != nil {
				log.Printf("plain create: %v", err)
				return 0, false
			}
			// Its Secret too, so its pod starts as Kiln's do: the cluster
			// carries the same load in both runs. Not part of the latency.
			go func() {
				_, _ = c.Client.CoreV1().Secrets(ns).Create(ctx, jobtemplates.OwnedBy(secret, created), metav1.CreateOptions{})
			}()
			t, ok := waitSeen(job.Name, time.Now().Add(30*time.Second))
			return t.Sub(start), ok
		})
		kiln := offer(rate, n, func(i int) (time.Duration, bool) {
			start := time.Now()
			id := submit(projects[i%len(projects)])
			t, ok := waitSeen(jobtemplates.JobName(id), time.Now().Add(60*time.Second))
			return t.Sub(start), ok
		})
		p50p, p99p := pct(plain, 50), pct(plain, 99)
		p50k, p99k := pct(kiln, 50), pct(kiln, 99)
		fmt.Printf("%-6d %-10s %6d %10s %10s\n", rate, "plain", len(plain), p50p.Round(time.Millisecond), p99p.Round(time.Millisecond))
		fmt.Printf("%-6d %-10s %6d %10s %10s   p99 ratio %.2f\n", rate, "kiln", len(kiln), p50k.Round(time.Millisecond), p99k.Round(time.Millisecond), float64(p99k)/float64(p99p))
		results = append(results, result{rate, float64(p99k) / float64(max(p99p, time.Microsecond))})
	}
	for _, r := range results {
		// Issue 4 held Kiln's p99 within 3× the plain create's; issue 13
		// asks for 2× at 20 builds/s.
		goal := 3.0
		if r.rate == 20 {
			goal = 2
		}
		benchproc.Target(os.Stdout, fmt.Sprintf("submit → Job created p99 vs plain create at %d builds/s", r.rate),
			fmt.Sprintf("%.2f", r.ratio), fmt.Sprintf("≤ %g", goal), r.ratio <= goal)
	}
}

// offer starts op at rate per second, n times, and returns the latencies of those that finished.
func offer(rate, n int, op func(i int) (time.Duration, bool)) []time.Duration {
	var mu sync.Mutex
	var out []time.Duration
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := range n {
		<-tick.C
		wg.Go(func() {
			if d, ok := op(i); ok {
				mu.Lock()
				out = append(out, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(out) < n {
		log.Printf("%d of %d operations did not finish", n-len(out), n)
	}
	return out
}

func pct(ds []time.Duration, p int) time.Duration { return benchproc.Percentile(ds, p) }
