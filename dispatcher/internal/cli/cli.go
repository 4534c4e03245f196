// Package cli is the dispatcher's command line: serve, migrate, token, and
// client (ClientMain: a command line over the dispatcher/client library).
// It parses arguments and wires packages together; behaviour lives elsewhere.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/config"
	"github.com/kilnbuild/kiln/dispatcher/internal/httpserve"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema/migrate"
)

const usage = `usage: dispatcher <command> [flags]

commands:
  serve                         run the HTTP API and the River workers
  migrate                       apply Kiln's and River's migrations (idempotent, safe to run concurrently)
  token create --name N (--admin | --project P ...)
                                print a new API token once (P: project id or name; repeatable)
  token list [--json]           list API tokens: id, name, scope, created, last used, revoked (never the token)
  token revoke <id|name>        revoke an API token: refused within the auth cache TTL, its streams end within a heartbeat
  client <command> [flags]      talk to a running dispatcher (KILN_URL, KILN_TOKEN): submit, get, list,
                                cancel, watch; 'dispatcher client help' for more
  help                          show this text

Every command takes the configuration flags; run 'dispatcher serve -h' to list them.
`

// Main runs the command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "migrate":
		err = runMigrate(ctx, args[1:], stderr)
	case "token":
		err = token(ctx, args[1:], stdout, stderr)
	case "client":
		return ClientMain(ctx, args[1:], stdout, stderr, os.Getenv)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "dispatcher: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "dispatcher %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func runMigrate(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, _, err := config.Parse("migrate", args, nil)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel)
	pool, err := app.OpenPool(ctx, cfg.DatabaseURL, cfg.DBSchema)
	if err != nil {
		return err
	}
	defer pool.Close()
	_, err = migrate.Up(ctx, pool, migrate.Options{Schema: cfg.DBSchema, Logger: logger})
	return err
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, _, err := config.Parse("serve", args, nil)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel)
	pool, err := app.OpenPool(ctx, cfg.DatabaseURL, cfg.DBSchema)
	if err != nil {
		return err
	}
	defer pool.Close()
	if cfg.AutoMigrate {
		if _, err := migrate.Up(ctx, pool, migrate.Options{Schema: cfg.DBSchema, Logger: logger}); err != nil {
			return err
		}
	}
	templates := jobtemplates.Embedded()
	if cfg.TemplatesDir != "" {
		if templates, err = loadTemplates(cfg.TemplatesDir); err != nil {
			return err
		}
	}
	kube, err := kubeOptions(cfg, logger)
	if err != nil {
		return err
	}
	a, err := app.New(app.Options{Pool: pool, Schema: cfg.DBSchema, Workers: cfg.Workers, Logger: logger,
		AuthCacheTTL: cfg.AuthCacheTTL, AuthMissTTL: cfg.AuthMissTTL, RateLimits: &cfg.RateLimits,
		StreamsPerToken: cfg.StreamsPerToken, Templates: templates, Kube: kube,
		CallbackAllowlist: cfg.CallbackAllowlist, CallbackMaxAge: cfg.CallbackMaxAge, CallbackTimeout: cfg.CallbackTimeout,
		EventBuffer: cfg.EventBuffer, EventHeartbeat: cfg.EventHeartbeat,
		PublicURL: cfg.PublicURL, ConsoleSessionTTL: cfg.ConsoleSessionTTL})
	if err != nil {
		return err
	}
	ln, err := httpserve.Listen(cfg.ListenAddr, cfg.HTTPMaxConns)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	if cfg.DebugAddr != "" {
		_, stopDebug, err := serveDebug(cfg.DebugAddr, logger)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	// Every phase of a request is bounded (headers, body, answer, idle); event
	// streams lift the body and answer deadlines once authenticated.
	srv := httpserve.NewServer(a.Handler, httpserve.Options{ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		BodyTimeout: cfg.HTTPBodyTimeout, WriteTimeout: cfg.HTTPWriteTimeout, IdleTimeout: cfg.HTTPIdleTimeout})
	srv.RegisterOnShutdown(a.Events.Stop) // event streams end so Shutdown need not wait for them; clients resume elsewhere
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("serving", "addr", ln.Addr().String(), "max_conns", cfg.HTTPMaxConns, "workers", cfg.Workers, "templates", templates.Names(),
		"public_url", cfg.PublicURL)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	logger.Info("shutting down")
	serr := srv.Shutdown(sctx)
	aerr := a.Stop(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, serr, aerr)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func token(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] != "create" {
		return tokenAdmin(ctx, args, stdout, stderr) // list, revoke: token.go
	}
	if len(args) < 1 {
		return errors.New(tokenUsage)
	}
	cfg, fs, err := config.Parse("token create", nil, nil)
	if err != nil {
		return err
	}
	// token create has its own flags next to the configuration ones.
	fs = flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "a name for the token (who or what uses it); required")
	admin := fs.Bool("admin", false, "an admin token: manages projects and sees every build")
	var projects multiFlag
	fs.Var(&projects, "project", "a project id or name the token may use (repeatable)")
	dbURL := fs.String("database-url", cfg.DatabaseURL, "PostgreSQL connection URL ($KILN_DATABASE_URL)")
	dbSchema := fs.String("db-schema", cfg.DBSchema, "Postgres schema ($KILN_DB_SCHEMA)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch {
	case *name == "":
		return errors.New("--name: required")
	case *admin && len(projects) > 0:
		return errors.New("--admin and --project: give one or the other")
	case !*admin && len(projects) == 0:
		return errors.New("--project: give at least one project, or --admin")
	}
	pool, err := app.OpenPool(ctx, *dbURL, *dbSchema)
	if err != nil {
		return err
	}
	defer pool.Close()
	var ids []string
	for _, p := range projects {
		lookup := store.GetProjectByName
		if _, perr := uuid.Parse(p); perr == nil {
			lookup = store.GetProject
		}
		pr, err := lookup(ctx, pool, p)
		if err != nil {
			return fmt.Errorf("--project %s: %w", p, err)
		}
		ids = append(ids, pr.ID)
	}
	tok, err := auth.Issue(ctx, pool, *name, *admin, ids)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func loadTemplates(dir string) (*jobtemplates.Catalog, error) {
	c, err := jobtemplates.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("templates-dir %s: %w", dir, err)
	}
	return jobtemplates.Embedded().Merge(c), nil
}

// kubeOptions connects to the build cluster: the kubeconfig given, else the
// in-cluster config when running in a pod, else none (builds stay pending).
func kubeOptions(cfg *config.Config, logger *slog.Logger) (*app.KubeOptions, error) {
	var rc *rest.Config
	var err error
	switch {
	case cfg.Kubeconfig != "":
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		rc, err = rest.InClusterConfig()
	default:
		logger.Warn("no Kubernetes cluster configured (KILN_KUBECONFIG empty, not in a pod): builds will stay pending")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = cfg.KubeQPS, cfg.KubeBurst
	// The apiserver gzips what a client accepts gzipped: on the paths a
	// dispatcher talks over (in-cluster, or a LAN) decompressing its watch
	// streams costs more CPU than the bytes save (8% of the dispatcher's
	// CPU at 20 builds/s, bench-dispatch's profile).
	rc.DisableCompression = true
	rc.UserAgent = "kiln-dispatcher"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	url := cfg.DispatcherURL
	if url == "" {
		url = "http://" + cfg.ListenAddr
	}
	return &app.KubeOptions{Client: client, Namespace: cfg.BuildNamespace, DispatcherURL: url, Image: cfg.RunnerImage,
		MaxInFlight: cfg.MaxInFlight, ImagePullTimeout: cfg.ImagePullTimeout,
		UnschedulableTimeout: cfg.UnschedulableTimeout, ReconcileInterval: cfg.ReconcileInterval,
		AddonURLs: cfg.AddonURLs, WorkspaceImage: cfg.WorkspaceImage, WorkspaceEnv: cfg.WorkspaceEnv,
		RunnerServiceAccount: cfg.RunnerServiceAccount, WorkspaceTimeout: cfg.WorkspaceTimeout}, nil
}

// serveDebug serves Go's profiles (net/http/pprof) on their own listener,
// apart from the API and without its auth: bind it to loopback.
func serveDebug(addr string, logger *slog.Logger) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("debug-addr: listening on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("serving profiles", "addr", ln.Addr().String())
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}
