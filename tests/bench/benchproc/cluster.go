package benchproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/tests/childproc"
)

// BuildsNamespace creates the namespace builds run in and the service
// account the default template names, as a platform team's install would.
func BuildsNamespace(ctx context.Context, c kubernetes.Interface, ns string) {
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	Check(err)
	_, err = c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kiln-runner"}}, metav1.CreateOptions{})
	Check(err)
}

// ClusterOptions configures StartOnCluster.
type ClusterOptions struct {
	DatabaseURL string // the database; the dispatcher gets a fresh schema on it
	Kubeconfig  string
	Namespace   string   // where builds run (BuildsNamespace makes it)
	Name        string   // names the schema (bench_<name>_<time>) and the dispatcher's Postgres application_name (<name>-dispatcher)
	Env         []string // more KILN_* settings (they win over the defaults)
}

// OnCluster is a dispatcher serving builds on a cluster, started by
// StartOnCluster: migrated on its own schema, with an admin token, rate
// limits off and 20 dispatch workers unless Env says otherwise.
type OnCluster struct {
	*Proc
	API     *client.Client // as the admin
	Token   string         // the admin token
	Schema  string
	AppName string        // the dispatcher's application_name in pg_stat_activity
	DB      *pgxpool.Pool // on Schema, for the bench's own reads (2 connections)
	stops   []func()
}

// StartOnCluster migrates a fresh schema, creates an admin token and runs
// `dispatcher serve` on a free loopback port against the cluster, waiting
// for /readyz. Stop stops it and drops the schema.
func StartOnCluster(ctx context.Context, bin string, o ClusterOptions) *OnCluster {
	d := &OnCluster{Schema: fmt.Sprintf("bench_%s_%d", o.Name, time.Now().Unix()), AppName: o.Name + "-dispatcher"}
	admin, err := pgxpool.New(ctx, o.DatabaseURL)
	Check(err)
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+d.Schema)
	Check(err)
	d.stops = append(d.stops, func() {
		_, _ = admin.Exec(context.Background(), "DROP SCHEMA "+d.Schema+" CASCADE")
		admin.Close()
	})

	sep := "?"
	if strings.Contains(o.DatabaseURL, "?") {
		sep = "&"
	}
	env := append(os.Environ(), "KILN_DATABASE_URL="+o.DatabaseURL+sep+"pool_max_conns=20&application_name="+d.AppName,
		"KILN_DB_SCHEMA="+d.Schema)
	run := func(args ...string) string {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			d.Stop()
			Check(fmt.Errorf("dispatcher %s: %w", strings.Join(args, " "), err))
		}
		return strings.TrimSpace(string(out))
	}
	run("migrate")
	d.Token = run("token", "create", "--name", "bench", "--admin")

	addr := FreeAddr()
	srv := exec.Command(bin, "serve")
	srv.Env = append(append(env, "KILN_LISTEN_ADDR="+addr, "KILN_KUBECONFIG="+o.Kubeconfig, "KILN_BUILD_NAMESPACE="+o.Namespace,
		"KILN_RATE_WRITES=0", "KILN_RATE_READS=0", "KILN_LOG_LEVEL="+EnvOr("BENCH_LOG_LEVEL", "warn"), "KILN_WORKERS=20"), o.Env...)
	srv.Stderr = os.Stderr
	if err := childproc.Start(srv); err != nil {
		d.Stop()
		Check(err)
	}
	d.stops = append(d.stops, func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() })
	d.Proc = &Proc{URL: "http://" + addr, Addr: addr, PID: srv.Process.Pid, cmd: srv}
	WaitReady(d.URL, 300)
	d.API = &client.Client{BaseURL: d.URL, Token: d.Token}

	cfg, err := pgxpool.ParseConfig(o.DatabaseURL)
	Check(err)
	cfg.ConnConfig.RuntimeParams["search_path"] = d.Schema
	cfg.ConnConfig.RuntimeParams["application_name"] = "bench"
	cfg.MaxConns = 2
	d.DB, err = pgxpool.NewWithConfig(ctx, cfg)
	Check(err)
	d.stops = append(d.stops, d.DB.Close)
	return d
}

// Stop stops the dispatcher (SIGTERM, a graceful shutdown) and drops its
// schema.
func (d *OnCluster) Stop() {
	for _, s := range slices.Backward(d.stops) {
		s()
	}
	d.stops = nil
}
