// Command scale holds N builds running at once across P projects on kubebox
// (the runner is tests/standin-runner in its hold mode: light enough that the
// machine holds the pods) and measures, at each N, what grows with running
// builds: the dispatcher's RSS and CPU seconds, its informers' cache
// (kiln_informer_objects), its Postgres connections (pg_stat_activity, this
// bench's own pools excluded) and the apiserver's requests
// (apiserver_request_total by verb and resource, read from its /metrics).
// Then it releases every build at once and measures the runner-protocol
// write rates as they complete. It prints per-build slopes between steps so
// the cost at 10× can be read off, and ends with its target lines.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/bench/benchproc"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

func main() {
	dbURL := flag.String("database-url", benchproc.EnvOr("KILN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"), "database")
	dispatcherBin := flag.String("dispatcher", "bin/dispatcher", "dispatcher binary")
	sizesFlag := flag.String("sizes", "100,300,1000", "running builds to hold at each step")
	nProjects := flag.Int("projects", 50, "projects the builds are spread over")
	budget := flag.Duration("budget", 8*time.Minute, "the whole bench's time; a step that would not fit is not started")
	flag.Parse()
	start := time.Now()
	ctx := context.Background()
	var sizes []int
	for _, f := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		benchproc.Check(err)
		sizes = append(sizes, n)
	}
	maxN := sizes[len(sizes)-1]
	abs, err := filepath.Abs(*dispatcherBin)
	benchproc.Check(err)

	// Pods are local processes that must see the runner and the release
	// file: both live under the host temp dir, not /tmp (an emptyDir there).
	work, err := os.MkdirTemp(kbtest.HostTempDir(), "bench-scale-")
	benchproc.Check(err)
	defer os.RemoveAll(work)
	runner := filepath.Join(work, "standin-runner")
	if out, err := exec.Command("go", "build", "-o", runner, "./tests/standin-runner").CombinedOutput(); err != nil {
		log.Fatalf("building the stand-in runner: %v\n%s", err, out)
	}
	release := filepath.Join(work, "release")

	c, stop, err := kbtest.UpWith(kbtest.Options{Images: map[string]string{"kilnbuild/kiln-jobrunner:latest": runner},
		Capacity: fmt.Sprintf("cpu=128,memory=512Gi,pods=%d", maxN+100)})
	benchproc.Check(err)
	defer stop(true)
	ns := "bench"
	benchproc.BuildsNamespace(ctx, c.Client, ns)
	disp := benchproc.StartOnCluster(ctx, abs, benchproc.ClusterOptions{DatabaseURL: *dbURL, Kubeconfig: c.Kubeconfig, Namespace: ns,
		Name: "scale", Env: []string{fmt.Sprintf("KILN_MAX_IN_FLIGHT=%d", maxN+100)}})
	defer disp.Stop()
	base, api, tok := disp.URL, disp.API, disp.Token

	perProject := (maxN + *nProjects - 1) / *nProjects
	var projects []string
	for i := range *nProjects {
		projects = append(projects, benchproc.CreateProject(base, tok, schema.ProjectInput{Name: fmt.Sprintf("p%d", i), MaxConcurrent: perProject + 1}))
	}
	prompt := fmt.Sprintf("hold %s %d", release, int(budget.Seconds()))

	// running counts builds whose runner has posted its first event (so
	// its pod is up and it has spoken the protocol), from the audit trail.
	running := func() int {
		var n int
		benchproc.Check(disp.DB.QueryRow(ctx, `SELECT count(DISTINCT build_id) FROM build_events`).Scan(&n))
		return n
	}
	pgConns := func() int {
		var n int
		benchproc.Check(disp.DB.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, disp.AppName).Scan(&n))
		return n
	}

	type sample struct {
		n           int
		rssKiB      int64
		cpuSec      float64
		jobs, pods  float64
		pg          int
		apiRequests map[string]float64
		took        time.Duration
	}
	snap := func(n int, took time.Duration) sample {
		dm := benchproc.Scrape(base + "/metrics")
		return sample{n: n, rssKiB: disp.MemKiB("VmRSS"), cpuSec: benchproc.CPUSeconds(disp.PID), jobs: dm.Sum("kiln_informer_objects", `resource="jobs"`),
			pods: dm.Sum("kiln_informer_objects", `resource="pods"`), pg: pgConns(), apiRequests: apiserverRequests(c), took: took}
	}
	idle := snap(0, 0)
	samples := []sample{idle}
	fmt.Printf("bench-scale: kubebox %s, %d projects, runner tests/standin-runner hold\n", kbtest.Version, *nProjects)
	fmt.Printf("%6s %9s %8s %8s %8s %6s %10s %8s\n", "N", "RSS MiB", "CPU s", "jobs", "pods", "pg", "apiserver", "ramp")
	submitted := 0
	stoppedAt := ""
	for _, n := range sizes {
		if left := *budget - time.Since(start); len(samples) > 1 && samples[len(samples)-1].took*time.Duration(n-submitted)/time.Duration(max(1, samples[len(samples)-1].n-samples[len(samples)-2].n)) > left/2 {
			stoppedAt = fmt.Sprintf("stopped before N=%d: the last ramp's pace would not leave time within the %s budget to release and drain", n, *budget)
			break
		}
		t0 := time.Now()
		for ; submitted < n; submitted++ {
			if _, err := api.SubmitOnce(ctx, projects[submitted%len(projects)], schema.BuildSpec{Prompt: prompt}, ""); err != nil {
				log.Fatalf("submitting build %d: %v", submitted, err)
			}
		}
		deadline := time.Now().Add(*budget - time.Since(start))
		for running() < n && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
		}
		if got := running(); got < n {
			stoppedAt = fmt.Sprintf("stopped at N=%d: only %d builds were running when the %s budget ran out", n, got, *budget)
			samples = append(samples, snap(got, time.Since(t0)))
			break
		}
		time.Sleep(5 * time.Second) // let the informers' and the pool's figures settle
		s := snap(n, time.Since(t0))
		samples = append(samples, s)
		fmt.Printf("%6d %9.1f %8.2f %8.0f %8.0f %6d %10.0f %8s\n", n, float64(s.rssKiB)/1024, s.cpuSec, s.jobs, s.pods, s.pg, total(s.apiRequests), s.took.Round(time.Second))
	}
	held := samples[len(samples)-1]

	// Release: every runner posts its second event batch and its result.
	before := benchproc.Scrape(base + "/metrics")
	t0 := time.Now()
	benchproc.Check(os.WriteFile(release, nil, 0o644))
	var done int
	for time.Since(t0) < 3*time.Minute {
		benchproc.Check(disp.DB.QueryRow(ctx, `SELECT count(*) FROM builds WHERE status = 'completed'`).Scan(&done))
		if done >= held.n {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	drain := time.Since(t0)
	after := benchproc.Scrape(base + "/metrics")
	// Counted after the last result, so a watcher's late look is in too.
	time.Sleep(5 * time.Second)
	end := snap(held.n, 0)

	fmt.Println()
	fmt.Println("slopes between steps (per 100 running builds):")
	for i := 2; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		d := float64(b.n-a.n) / 100
		fmt.Printf("  N %d→%d: RSS %+.1f MiB, CPU %.2f s, informer objects %+.0f, pg connections %+d, apiserver requests %.0f\n",
			a.n, b.n, float64(b.rssKiB-a.rssKiB)/1024/d, (b.cpuSec-a.cpuSec)/d, (b.jobs+b.pods-a.jobs-a.pods)/d, b.pg-a.pg, (total(b.apiRequests)-total(a.apiRequests))/d)
	}
	lo, hi := samples[1], held
	slope := float64(hi.rssKiB-lo.rssKiB) / 1024 / float64(max(1, hi.n-lo.n))
	if hi.n == lo.n {
		slope = float64(hi.rssKiB-idle.rssKiB) / 1024 / float64(hi.n)
	}
	at1000 := float64(hi.rssKiB)/1024 + slope*float64(1000-hi.n)
	fmt.Printf("dispatcher: idle RSS %.1f MiB; %.1f KiB per running build; CPU %.3f s per build (launch to held), %.3f s per build over its whole life\n",
		float64(idle.rssKiB)/1024, slope*1024, (hi.cpuSec-idle.cpuSec)/float64(hi.n), (end.cpuSec-idle.cpuSec)/float64(hi.n))

	fmt.Printf("\nrelease of %d held builds: %d completed in %s\n", held.n, done, drain.Round(10*time.Millisecond))
	for _, r := range []string{"/runner/v1/builds/{id}/events", "/runner/v1/builds/{id}/result", "/runner/v1/builds/{id}/"} {
		n := after.Sum("kiln_http_requests_total", `route="`+r+`"`) - before.Sum("kiln_http_requests_total", `route="`+r+`"`)
		fmt.Printf("  %-34s %6.0f requests, %7.1f/s\n", r, n, n/drain.Seconds())
	}

	// Requests per build over the builds' whole life, by verb and resource.
	fmt.Printf("\napiserver requests per build (all clients, N=%d, submit → completed):\n", held.n)
	per := map[string]float64{}
	for k, v := range end.apiRequests {
		if d := v - idle.apiRequests[k]; d > 0 {
			per[k] = d / float64(held.n)
		}
	}
	keys := make([]string, 0, len(per))
	for k := range per {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return per[keys[i]] > per[keys[j]] })
	var kiln float64
	for _, k := range keys {
		if per[k] < 0.01 {
			continue
		}
		mark := ""
		if kilnsRequest(k) {
			kiln += per[k]
			mark = "  (dispatcher)"
		}
		fmt.Printf("  %-40s %7.2f%s\n", k, per[k], mark)
	}
	if stoppedAt != "" {
		fmt.Println("\n" + stoppedAt)
	}
	benchproc.Target(os.Stdout, fmt.Sprintf("dispatcher RSS at 1000 running builds (measured at %d, slope extrapolated)", hi.n),
		fmt.Sprintf("%.0f MiB", at1000), "≤ 300 MiB", at1000 <= 300)
	// Job + Secret creates are 2; the constant 1 leaves room for one more
	// request a build (a watcher's live GET or a terminal Job's delete).
	benchproc.Target(os.Stdout, "dispatcher's apiserver requests per build (jobs, secrets, events verbs but the Job controller's)",
		fmt.Sprintf("%.2f", kiln), "≤ 2 (Job + Secret create) + 1", kiln <= 3)
}

// kilnsRequest says whether a verb/resource key is one the dispatcher makes
// and the cluster's own components do not: apiserver_request_total has no
// client label, so the attribution is by what each side does. The Job
// controller writes jobs/status and creates pods and events; the node
// writes pods/status; the dispatcher creates Jobs and Secrets, gets and
// deletes Jobs, and lists events; its informers LIST and WATCH jobs and pods
// once a process (not per build).
func kilnsRequest(k string) bool {
	switch k {
	case "POST jobs", "POST secrets", "GET jobs", "DELETE jobs", "LIST events", "GET secrets", "PATCH jobs", "PUT jobs":
		return true
	}
	return false
}

func total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// apiserverRequests reads apiserver_request_total from the apiserver's
// /metrics, summed by "VERB resource[/subresource]".
func apiserverRequests(c *kbtest.Cluster) map[string]float64 {
	out := map[string]float64{}
	for _, s := range benchproc.APIServerMetrics(c.Client) {
		if s.Name != "apiserver_request_total" {
			continue
		}
		k := s.Labels["verb"] + " " + s.Labels["resource"]
		if sr := s.Labels["subresource"]; sr != "" {
			k += "/" + sr
		}
		out[k] += s.Value
	}
	return out
}
