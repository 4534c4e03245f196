// Command dispatch measures how long Kiln takes from a build submission to
// its Kubernetes Job existing, at 5, 10 and 20 builds per second, on
// kubebox, and in the same run the latency of a plain Job create through
// client-go of the same Job spec. Both are observed the same way: a watch on
// the namespace sees the Job's ADDED event. It prints p50/p99 of both and
// their ratio; where Kiln's time goes (submit → 202, → the River fetch, →
// the Job); and what each run cost the machine: its busy share, CPU per
// build by process, and the apiserver's own Job-create latency — so a p99
// that grows because the machine is saturated shows as such.
// Targets: Kiln's p99 within 3× the plain create's at 5 builds/s (issue 4),
// within 2× at 20 builds/s (issue 13).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

func main() {
	dbURL := flag.String("database-url", benchproc.EnvOr("KILN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"), "database")
	dispatcherBin := flag.String("dispatcher", "bin/dispatcher", "dispatcher binary")
	runnerBin := flag.String("runner", "", "executable build pods run (default: /bin/true)")
	dur := flag.Duration("duration", 20*time.Second, "how long each rate is offered (at 5/s, 20 s gives 100 samples: a p99 that is not just the maximum)")
	ratesFlag := flag.String("rates", "5,10,20", "builds a second offered, one run each; 5 and 20 have targets")
	profile := flag.String("cpuprofile", "", "write the dispatcher's CPU profile of the Kiln run at the last rate to this file (go tool pprof reads it)")
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
	benchproc.BuildsNamespace(ctx, c.Client, ns)
	env := []string{"KILN_MAX_IN_FLIGHT=10000"}
	debugAddr := ""
	if *profile != "" {
		debugAddr = benchproc.FreeAddr()
		env = append(env, "KILN_DEBUG_ADDR="+debugAddr)
	}
	d := benchproc.StartOnCluster(ctx, abs, benchproc.ClusterOptions{DatabaseURL: *dbURL, Kubeconfig: c.Kubeconfig, Namespace: ns, Name: "dispatch", Env: env})
	defer d.Stop()
	base, api := d.URL, d.API
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
		projects = append(projects, benchproc.CreateProject(base, d.Token, schema.ProjectInput{Name: fmt.Sprintf("p%d", i), MaxConcurrent: 100}))
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
		rate         int
		ratio        float64
		plain, kiln  phase
		intake, pick []time.Duration // submit → 202; 202 → the dispatch job's fetch
		launch       []time.Duration // the fetch → the Job's ADDED event
	}
	var results []result
	var rates []int
	for _, f := range strings.Split(*ratesFlag, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		benchproc.Check(err)
		rates = append(rates, r)
	}
	for _, rate := range rates {
		n := int(dur.Seconds()) * rate
		r := result{rate: rate}
		// Baseline: the same Job, created directly.
		s0 := snap(c, d)
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
		r.plain = s0.until(snap(c, d), len(plain))

		var stopProfile func()
		if rate == rates[len(rates)-1] && *profile != "" {
			stopProfile = cpuProfile(debugAddr, *profile, *dur)
		}
		var tmu sync.Mutex
		accepted := map[string][2]time.Time{} // build → submit start, 202
		s0 = snap(c, d)
		kiln := offer(rate, n, func(i int) (time.Duration, bool) {
			start := time.Now()
			id := submit(projects[i%len(projects)])
			tmu.Lock()
			accepted[id] = [2]time.Time{start, time.Now()}
			tmu.Unlock()
			t, ok := waitSeen(jobtemplates.JobName(id), time.Now().Add(60*time.Second))
			return t.Sub(start), ok
		})
		r.kiln = s0.until(snap(c, d), len(kiln))
		if stopProfile != nil {
			stopProfile()
		}
		// Where Kiln's time goes, per build: the dispatch job's fetch is
		// River's attempted_at (the same machine's clock).
		for id, t := range accepted {
			var fetched time.Time
			err := d.DB.QueryRow(ctx, `SELECT j.attempted_at FROM builds b JOIN river_job j ON j.id = b.river_job_id WHERE b.id = $1`, id).Scan(&fetched)
			benchproc.Check(err)
			mu.Lock()
			job, ok := seen[jobtemplates.JobName(id)]
			mu.Unlock()
			if !ok {
				continue
			}
			r.intake = append(r.intake, t[1].Sub(t[0]))
			r.pick = append(r.pick, fetched.Sub(t[1]))
			r.launch = append(r.launch, job.Sub(fetched))
		}

		p50p, p99p := pct(plain, 50), pct(plain, 99)
		p50k, p99k := pct(kiln, 50), pct(kiln, 99)
		r.ratio = float64(p99k) / float64(max(p99p, time.Microsecond))
		fmt.Printf("%-6d %-10s %6d %10s %10s\n", rate, "plain", len(plain), ms(p50p), ms(p99p))
		fmt.Printf("%-6d %-10s %6d %10s %10s   p99 ratio %.2f\n", rate, "kiln", len(kiln), ms(p50k), ms(p99k), r.ratio)
		results = append(results, r)
	}

	fmt.Println("\nwhere Kiln's time goes (p50 / p99):")
	fmt.Printf("%-6s %-20s %-20s %-20s\n", "rate/s", "submit → 202", "202 → River fetch", "fetch → Job ADDED")
	for _, r := range results {
		fmt.Printf("%-6d %-20s %-20s %-20s\n", r.rate, p5099(r.intake), p5099(r.pick), p5099(r.launch))
	}
	fmt.Printf("\nthe machine during each run (busy: 100%% a core, %d cores), CPU ms per build by process:\n", runtime.NumCPU())
	benchproc.CPUHeader(os.Stdout, "rate/s path")
	for _, r := range results {
		r.plain.cpu.Row(os.Stdout, fmt.Sprintf("%-6d plain", r.rate))
		r.kiln.cpu.Row(os.Stdout, fmt.Sprintf("%-6d kiln", r.rate))
	}
	fmt.Println("the apiserver's own POST jobs latency (apiserver_request_duration_seconds), mean / the p99's bucket:")
	for _, r := range results {
		fmt.Printf("%-6d plain %s / %s, kiln %s / %s\n", r.rate, msf(r.plain.createMean), msf(r.plain.createP99), msf(r.kiln.createMean), msf(r.kiln.createP99))
	}
	if *profile != "" {
		fmt.Printf("\ndispatcher CPU profile of the Kiln run at %d builds/s: %s (go tool pprof -top %s %s)\n", rates[len(rates)-1], *profile, abs, *profile)
	}
	for _, r := range results {
		// Issue 4 held Kiln's p99 within 3× the plain create's; issue 13
		// asks for 2× at 20 builds/s.
		var goal float64
		switch r.rate {
		case 5:
			goal = 3
		case 20:
			goal = 2
		default:
			continue
		}
		benchproc.Target(os.Stdout, fmt.Sprintf("submit → Job created p99 vs plain create at %d builds/s", r.rate),
			fmt.Sprintf("%.2f", r.ratio), fmt.Sprintf("≤ %g", goal), r.ratio <= goal)
	}
}

// sample is what the machine and the apiserver have done up to a moment.
type sample struct {
	cpu          benchproc.CPUSample
	apiserverMet benchproc.Exposition
}

func snap(c *kbtest.Cluster, d *benchproc.OnCluster) sample {
	return sample{cpu: benchproc.TakeCPU(d.PID), apiserverMet: benchproc.APIServerMetrics(c.Client)}
}

// phase is what one run cost the machine (its busy share, CPU ms per build
// by process) and the apiserver's own latency of Job creates (mean and the
// p99's bucket bound).
type phase struct {
	cpu                   benchproc.CPUCost
	createMean, createP99 float64
}

func (a sample) until(b sample, builds int) phase {
	p := phase{cpu: a.cpu.Until(b.cpu, builds)}
	_, p.createMean, p.createP99 = benchproc.HistogramDelta(a.apiserverMet, b.apiserverMet, "apiserver_request_duration_seconds", 0.99,
		`verb="POST"`, `resource="jobs"`)
	return p
}

// cpuProfile starts a CPU profile of the dispatcher for d (its pprof
// listener at addr) and returns a function that waits for it and writes it
// to path.
func cpuProfile(addr, path string, d time.Duration) func() {
	done := make(chan error, 1)
	go func() {
		res, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds())))
		if err != nil {
			done <- err
			return
		}
		defer res.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, res.Body)
		done <- errors.Join(err, f.Close())
	}()
	return func() { benchproc.Check(<-done) }
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func msf(sec float64) string {
	if math.IsInf(sec, 1) {
		return "inf"
	}
	return fmt.Sprintf("%.0fms", sec*1000)
}

func p5099(ds []time.Duration) string {
	return ms(pct(ds, 50)) + " / " + ms(pct(ds, 99))
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
