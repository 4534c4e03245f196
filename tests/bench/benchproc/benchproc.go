// Package benchproc runs the dispatcher binary for the benchmarks in
// tests/bench: a serving process on a free loopback port, its subcommands,
// and the project a benchmark submits to. It measures nothing itself.
package benchproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
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
// port, waits for /readyz, and returns its URL and a stop function. It is
// for throughput benchmarks: the per-token and per-address rate limits are
// off (where the binary has them), or they would be what is measured.
func Serve(bin, dbURL, schema, logLevel string) (string, func()) {
	p := Start(bin, dbURL, schema, logLevel, NoRateLimits(bin)...)
	return p.URL, p.Stop
}

// NoRateLimits returns the `serve` flags that turn bin's rate limits off,
// those of them it has.
func NoRateLimits(bin string) []string {
	has := Flags(bin)
	var args []string
	for _, f := range []string{"rate-writes", "rate-reads", "rate-anonymous"} {
		if has[f] {
			args = append(args, "--"+f, "0")
		}
	}
	return args
}

// Proc is a dispatcher serving process started by Start.
type Proc struct {
	URL  string // http://127.0.0.1:port
	Addr string // 127.0.0.1:port
	PID  int
	cmd  *exec.Cmd
}

// Start runs `dispatcher serve --workers 0` (API only) with extra flags on a
// free loopback port and waits for /readyz.
func Start(bin, dbURL, schema, logLevel string, extra ...string) *Proc {
	addr := FreeAddr()
	args := append([]string{"serve", "--listen-addr", addr, "--database-url", dbURL, "--db-schema", schema,
		"--log-level", logLevel, "--workers", "0"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	Check(cmd.Start())
	p := &Proc{URL: "http://" + addr, Addr: addr, PID: cmd.Process.Pid, cmd: cmd}
	WaitReady(p.URL, 100)
	return p
}

// FreeAddr returns a loopback address with a port free at the moment.
func FreeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Check(err)
	defer ln.Close()
	return ln.Addr().String()
}

// Stop interrupts the process (a graceful shutdown) and waits for it.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
}

// MemKiB returns a memory figure of the process from /proc/<pid>/status, in
// KiB: "VmRSS" (resident now) or "VmHWM" (the peak since start or ResetPeak).
func (p *Proc) MemKiB(field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	Check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			Check(err)
			return n
		}
	}
	log.Fatalf("/proc/%d/status has no %s", p.PID, field)
	return 0
}

// ResetPeak sets the process's VmHWM back to its current RSS (Linux
// clear_refs); it reports whether that worked.
func (p *Proc) ResetPeak() bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.PID), []byte("5"), 0) == nil
}

// Flags returns the flag names `bin serve -h` lists, so a benchmark can use
// a setting only where the binary has it (an older build, another branch).
func Flags(bin string) map[string]bool {
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput() // -h exits 0 or 2 depending on the flag package; the text is what counts
	flags := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "-"); ok {
			if name, _, _ := strings.Cut(f, " "); name != "" {
				flags[strings.TrimPrefix(name, "-")] = true
			}
		}
	}
	return flags
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

// Percentile is the nearest-rank p-th percentile of ds (0 for none): the
// smallest value with at least p% of ds at or below it.
func Percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(i, len(s))-1)]
}
