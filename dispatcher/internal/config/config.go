// Package config reads the dispatcher's settings from the environment, with
// command-line flags overriding. Every setting has a documented default; the
// README's configuration table lists them.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
	"github.com/kilnbuild/kiln/dispatcher/internal/events"
	"github.com/kilnbuild/kiln/dispatcher/internal/httpserve"
	"github.com/kilnbuild/kiln/dispatcher/internal/launcher"
	"github.com/kilnbuild/kiln/dispatcher/internal/ratelimit"
	"github.com/kilnbuild/kiln/dispatcher/internal/watcher"
)

// Config is the dispatcher's configuration.
type Config struct {
	DatabaseURL     string
	ListenAddr      string
	DebugAddr       string
	LogLevel        slog.Level
	DBSchema        string
	Workers         int
	AuthCacheTTL    time.Duration
	TemplatesDir    string
	ShutdownTimeout time.Duration
	AutoMigrate     bool
	// PublicURL is the dispatcher's URL as people's browsers reach it
	// (KILN_PUBLIC_URL), without a trailing slash; empty: not configured,
	// and nothing links to the web console.
	PublicURL         string
	ConsoleSessionTTL time.Duration // how long a console sign-in lasts

	Kubeconfig           string
	KubeQPS              float32 // the Kubernetes client's request rate (client-go QPS) and burst
	KubeBurst            int
	BuildNamespace       string
	DispatcherURL        string
	RunnerImage          string
	MaxInFlight          int
	ImagePullTimeout     time.Duration
	UnschedulableTimeout time.Duration
	ReconcileInterval    time.Duration

	// Managed projects.
	AddonURLs            map[string]string // add-on type → admin URL (KILN_ADDON_<TYPE>_URL)
	WorkspaceImage       string
	WorkspaceEnv         map[string]string
	RunnerServiceAccount string
	WorkspaceTimeout     time.Duration

	CallbackAllowlist []netip.Prefix
	CallbackMaxAge    time.Duration
	CallbackTimeout   time.Duration
	EventBuffer       int
	EventHeartbeat    time.Duration

	AuthMissTTL     time.Duration
	RateLimits      ratelimit.Options // Reads, Writes, Anonymous (Unlimited when set to 0) and TrustedProxies
	StreamsPerToken int
	// The HTTP server's bounds (package httpserve).
	HTTPReadHeaderTimeout time.Duration
	HTTPBodyTimeout       time.Duration
	HTTPWriteTimeout      time.Duration
	HTTPIdleTimeout       time.Duration
	HTTPMaxConns          int
}

// Setting is one configuration entry: its environment name, flag and default.
type Setting struct {
	Env, Flag, Default, Help string
}

// Settings lists every setting, in README order.
var Settings = []Setting{
	{"KILN_DATABASE_URL", "database-url", "postgres://postgres@127.0.0.1:5432/kiln?sslmode=disable", "PostgreSQL connection URL"},
	{"KILN_LISTEN_ADDR", "listen-addr", "127.0.0.1:8080", "address the HTTP API listens on"},
	{"KILN_DEBUG_ADDR", "debug-addr", "", "address of a separate listener serving Go's /debug/pprof profiles (empty: off); keep it on loopback"},
	{"KILN_LOG_LEVEL", "log-level", "info", "debug, info, warn or error"},
	{"KILN_DB_SCHEMA", "db-schema", "", "Postgres schema for Kiln's and River's tables (empty: search_path, usually public)"},
	{"KILN_WORKERS", "workers", "10", "River dispatch workers in this process; 0 serves the API only (insert-only River client)"},
	{"KILN_AUTH_CACHE_TTL", "auth-cache-ttl", "10s", "how long a token lookup is cached; a revoked token stops working within it"},
	{"KILN_TEMPLATES_DIR", "templates-dir", "", "directory of operator job templates (*.yaml) that add to or override the built-in ones"},
	{"KILN_SHUTDOWN_TIMEOUT", "shutdown-timeout", "30s", "how long a graceful shutdown waits for requests and jobs"},
	{"KILN_AUTO_MIGRATE", "auto-migrate", "false", "apply migrations when serve starts"},
	{"KILN_PUBLIC_URL", "public-url", "", "the dispatcher's URL as people's browsers reach it, e.g. https://kiln.example.com: API answers and callbacks link to a build's console page under it (empty: no links)"},
	{"KILN_CONSOLE_SESSION_TTL", "console-session-ttl", duration(DefaultConsoleSessionTTL), "how long a web console sign-in lasts (1m to 720h)"},
	{"KILN_KUBECONFIG", "kubeconfig", "", "kubeconfig of the build cluster (empty: in-cluster config when running in a pod, else no cluster and builds stay pending)"},
	{"KILN_KUBE_QPS", "kube-qps", "200", "Kubernetes API requests a second this process may make, on average (client-go QPS; watches are not counted); a launch is 2 requests"},
	{"KILN_KUBE_BURST", "kube-burst", "400", "Kubernetes API requests this process may make at once above kube-qps (client-go Burst)"},
	{"KILN_BUILD_NAMESPACE", "build-namespace", launcher.DefaultNamespace, "namespace build Jobs and their Secrets are created in"},
	{"KILN_DISPATCHER_URL", "dispatcher-url", "", "the dispatcher's URL as runner pods reach it (empty: http:// plus the listen address)"},
	{"KILN_RUNNER_IMAGE", "runner-image", "", "runner image for every template (empty: each template's own)"},
	{"KILN_MAX_IN_FLIGHT", "max-in-flight", strconv.Itoa(launcher.DefaultMaxInFlight), "builds running or launching at once, all projects; each project also has max_concurrent"},
	{"KILN_IMAGE_PULL_TIMEOUT", "image-pull-timeout", duration(watcher.DefaultImagePullTimeout), "how long a build pod's image pull errors may last before the build fails"},
	{"KILN_UNSCHEDULABLE_TIMEOUT", "unschedulable-timeout", duration(watcher.DefaultUnschedulableTimeout), "how long a build pod may stay unschedulable before the build fails"},
	{"KILN_RECONCILE_INTERVAL", "reconcile-interval", duration(watcher.DefaultReconcileInterval), "how often the River leader re-checks active builds against the cluster"},
	{"KILN_ADDON_POSTGRES_URL", "addon-postgres-url", "", "admin URL of the PostgreSQL (or CockroachDB) server postgres add-ons are made on (empty: the add-on is refused); see docs/workspaces.md"},
	{"KILN_ADDON_REDIS_URL", "addon-redis-url", "", "admin URL of the Redis 6.2+ server redis add-ons are made on (empty: the add-on is refused)"},
	{"KILN_WORKSPACE_IMAGE", "workspace-image", "kilnbuild/kiln-workspace:latest", "image of a managed project's workspace pod when the project names none"},
	{"KILN_WORKSPACE_ENV", "workspace-env", "", "JSON object of environment every managed workspace gets, e.g. {\"ANTHROPIC_BASE_URL\":\"https://…\"} (a project's workspace.env overrides it); no secrets: use a project's secret_env"},
	{"KILN_RUNNER_SERVICE_ACCOUNT", "runner-service-account", "kiln-runner", "service account of build Jobs, in the build namespace: a managed project's RoleBinding lets it exec into the workspace"},
	{"KILN_WORKSPACE_TIMEOUT", "workspace-timeout", "5m0s", "how long a managed project's workspace pod may take to clone and be ready before provisioning fails and rolls back"},
	{"KILN_CALLBACK_ALLOWLIST", "callback-allowlist", "", "comma-separated CIDRs or addresses callbacks may reach although private, loopback or link-local (refused by default)"},
	{"KILN_CALLBACK_MAX_AGE", "callback-max-age", duration(callback.DefaultMaxAge), "how long after a build finished a failing callback is retried"},
	{"KILN_CALLBACK_TIMEOUT", "callback-timeout", duration(callback.DefaultTimeout), "how long one callback attempt may take to connect, send and get an answer"},
	{"KILN_EVENTS_BUFFER", "events-buffer", strconv.Itoa(events.DefaultBuffer), "events waiting for one live stream before that slow client is dropped (it resumes where it left)"},
	{"KILN_EVENTS_HEARTBEAT", "events-heartbeat", duration(events.DefaultHeartbeat), "how often an idle SSE or WebSocket event stream sends a heartbeat"},
	{"KILN_AUTH_MISS_TTL", "auth-miss-ttl", "5s", "how long an unknown token is remembered as unknown, so a flood of bad tokens does not reach the database (0: off)"},
	{"KILN_RATE_READS", "rate-reads", rate(ratelimit.DefaultReads), "read requests (GET) a second per token, on average (0: no limit)"},
	{"KILN_RATE_READS_BURST", "rate-reads-burst", strconv.Itoa(ratelimit.DefaultReads.Burst), "read requests one token may make at once"},
	{"KILN_RATE_WRITES", "rate-writes", rate(ratelimit.DefaultWrites), "write requests (build submissions, cancels, project changes) a second per token, on average (0: no limit)"},
	{"KILN_RATE_WRITES_BURST", "rate-writes-burst", strconv.Itoa(ratelimit.DefaultWrites.Burst), "write requests one token may make at once"},
	{"KILN_RATE_ANONYMOUS", "rate-anonymous", rate(ratelimit.DefaultAnonymous), "requests a second per client address without a valid token (none, or answered 401), on average (0: no limit)"},
	{"KILN_RATE_ANONYMOUS_BURST", "rate-anonymous-burst", strconv.Itoa(ratelimit.DefaultAnonymous.Burst), "requests without a valid token one client address may send at once"},
	{"KILN_TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated CIDRs or addresses of reverse proxies whose X-Forwarded-For names the client (empty: the header is ignored)"},
	{"KILN_STREAMS_PER_TOKEN", "streams-per-token", strconv.Itoa(ratelimit.DefaultStreamsPerToken), "event streams (SSE and WebSocket) one token may hold open at once (0: no cap)"},
	{"KILN_HTTP_READ_HEADER_TIMEOUT", "http-read-header-timeout", duration(httpserve.DefaultReadHeaderTimeout), "how long a client may take to send a request's headers"},
	{"KILN_HTTP_BODY_TIMEOUT", "http-body-timeout", duration(httpserve.DefaultBodyTimeout), "how long after its headers a request's body must have arrived; event streams lift it once authenticated"},
	{"KILN_HTTP_WRITE_TIMEOUT", "http-write-timeout", duration(httpserve.DefaultWriteTimeout), "how long after its headers a request's answer must have been written; event streams bound each write instead"},
	{"KILN_HTTP_IDLE_TIMEOUT", "http-idle-timeout", duration(httpserve.DefaultIdleTimeout), "how long an idle keep-alive connection waits for its next request"},
	{"KILN_HTTP_MAX_CONNS", "http-max-conns", strconv.Itoa(httpserve.DefaultMaxConns), "connections served at once (open event streams count); more wait to be accepted"},
}

func rate(l ratelimit.Limit) string { return strconv.FormatFloat(l.Rate, 'f', -1, 64) }

// duration formats a default the way a person writes it: 2m, 30s, 24h.
func duration(d time.Duration) string {
	s := d.String()
	for _, z := range []string{"m0s", "h0m"} {
		if strings.HasSuffix(s, z) {
			s = strings.TrimSuffix(s, z[1:])
		}
	}
	return s
}

// DefaultConsoleSessionTTL is how long a console sign-in lasts unless
// KILN_CONSOLE_SESSION_TTL says otherwise; MinConsoleSessionTTL and
// MaxConsoleSessionTTL bound what it may say.
const (
	DefaultConsoleSessionTTL = 12 * time.Hour
	MinConsoleSessionTTL     = time.Minute
	MaxConsoleSessionTTL     = 720 * time.Hour
)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Parse reads the environment and then args into a Config.
func Parse(name string, args []string, getenv func(string) string) (*Config, *flag.FlagSet, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	vals := map[string]*string{}
	for _, s := range Settings {
		def := s.Default
		if v := getenv(s.Env); v != "" {
			def = v
		}
		vals[s.Env] = fs.String(s.Flag, def, s.Help+" ($"+s.Env+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	c := &Config{DatabaseURL: *vals["KILN_DATABASE_URL"], ListenAddr: *vals["KILN_LISTEN_ADDR"],
		DebugAddr: *vals["KILN_DEBUG_ADDR"],
		DBSchema:  *vals["KILN_DB_SCHEMA"], TemplatesDir: *vals["KILN_TEMPLATES_DIR"]}
	if err := c.LogLevel.UnmarshalText([]byte(*vals["KILN_LOG_LEVEL"])); err != nil {
		return nil, fs, fmt.Errorf("log-level: %w", err)
	}
	var err error
	if c.Workers, err = strconv.Atoi(*vals["KILN_WORKERS"]); err != nil || c.Workers < 0 {
		return nil, fs, fmt.Errorf("workers: must be a non-negative integer, got %q", *vals["KILN_WORKERS"])
	}
	if c.AuthCacheTTL, err = time.ParseDuration(*vals["KILN_AUTH_CACHE_TTL"]); err != nil || c.AuthCacheTTL < 0 {
		return nil, fs, fmt.Errorf("auth-cache-ttl: must be a duration such as 10s, got %q", *vals["KILN_AUTH_CACHE_TTL"])
	}
	if c.ShutdownTimeout, err = time.ParseDuration(*vals["KILN_SHUTDOWN_TIMEOUT"]); err != nil || c.ShutdownTimeout <= 0 {
		return nil, fs, fmt.Errorf("shutdown-timeout: must be a positive duration, got %q", *vals["KILN_SHUTDOWN_TIMEOUT"])
	}
	if c.AutoMigrate, err = strconv.ParseBool(*vals["KILN_AUTO_MIGRATE"]); err != nil {
		return nil, fs, fmt.Errorf("auto-migrate: must be true or false, got %q", *vals["KILN_AUTO_MIGRATE"])
	}
	if c.PublicURL, err = parsePublicURL(*vals["KILN_PUBLIC_URL"]); err != nil {
		return nil, fs, fmt.Errorf("KILN_PUBLIC_URL (--public-url): %w", err)
	}
	ttl := *vals["KILN_CONSOLE_SESSION_TTL"]
	if c.ConsoleSessionTTL, err = time.ParseDuration(ttl); err != nil ||
		c.ConsoleSessionTTL < MinConsoleSessionTTL || c.ConsoleSessionTTL > MaxConsoleSessionTTL {
		return nil, fs, fmt.Errorf("KILN_CONSOLE_SESSION_TTL (--console-session-ttl): must be a duration from %s to %s, such as 12h, got %q",
			duration(MinConsoleSessionTTL), duration(MaxConsoleSessionTTL), ttl)
	}
	c.Kubeconfig, c.BuildNamespace = *vals["KILN_KUBECONFIG"], *vals["KILN_BUILD_NAMESPACE"]
	if qps, err := strconv.ParseFloat(*vals["KILN_KUBE_QPS"], 32); err != nil || !(qps > 0) || math.IsInf(qps, 1) {
		return nil, fs, fmt.Errorf("kube-qps: must be a positive number of requests a second, got %q", *vals["KILN_KUBE_QPS"])
	} else {
		c.KubeQPS = float32(qps)
	}
	if c.KubeBurst, err = strconv.Atoi(*vals["KILN_KUBE_BURST"]); err != nil || c.KubeBurst < 1 {
		return nil, fs, fmt.Errorf("kube-burst: must be a positive integer, got %q", *vals["KILN_KUBE_BURST"])
	}
	c.DispatcherURL, c.RunnerImage = *vals["KILN_DISPATCHER_URL"], *vals["KILN_RUNNER_IMAGE"]
	if c.MaxInFlight, err = strconv.Atoi(*vals["KILN_MAX_IN_FLIGHT"]); err != nil || c.MaxInFlight < 1 {
		return nil, fs, fmt.Errorf("max-in-flight: must be a positive integer, got %q", *vals["KILN_MAX_IN_FLIGHT"])
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{"KILN_IMAGE_PULL_TIMEOUT", &c.ImagePullTimeout}, {"KILN_UNSCHEDULABLE_TIMEOUT", &c.UnschedulableTimeout}, {"KILN_RECONCILE_INTERVAL", &c.ReconcileInterval}} {
		if *d.dst, err = time.ParseDuration(*vals[d.env]); err != nil || *d.dst <= 0 {
			return nil, fs, fmt.Errorf("%s: must be a positive duration such as 30s, got %q", flagOf(d.env), *vals[d.env])
		}
	}
	c.AddonURLs = map[string]string{}
	for typ, env := range map[string]string{"postgres": "KILN_ADDON_POSTGRES_URL", "redis": "KILN_ADDON_REDIS_URL"} {
		if v := *vals[env]; v != "" {
			c.AddonURLs[typ] = v
		}
	}
	c.WorkspaceImage, c.RunnerServiceAccount = *vals["KILN_WORKSPACE_IMAGE"], *vals["KILN_RUNNER_SERVICE_ACCOUNT"]
	if v := *vals["KILN_WORKSPACE_ENV"]; v != "" {
		if err := json.Unmarshal([]byte(v), &c.WorkspaceEnv); err != nil {
			return nil, fs, fmt.Errorf("workspace-env: must be a JSON object of strings, such as {\"K\":\"v\"}: %v", err)
		}
	}
	if c.WorkspaceTimeout, err = time.ParseDuration(*vals["KILN_WORKSPACE_TIMEOUT"]); err != nil || c.WorkspaceTimeout <= 0 {
		return nil, fs, fmt.Errorf("workspace-timeout: must be a positive duration such as 5m, got %q", *vals["KILN_WORKSPACE_TIMEOUT"])
	}
	if c.CallbackAllowlist, err = parsePrefixes(*vals["KILN_CALLBACK_ALLOWLIST"]); err != nil {
		return nil, fs, fmt.Errorf("callback-allowlist: %w", err)
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{"KILN_CALLBACK_MAX_AGE", &c.CallbackMaxAge}, {"KILN_CALLBACK_TIMEOUT", &c.CallbackTimeout}, {"KILN_EVENTS_HEARTBEAT", &c.EventHeartbeat}} {
		if *d.dst, err = time.ParseDuration(*vals[d.env]); err != nil || *d.dst <= 0 {
			return nil, fs, fmt.Errorf("%s: must be a positive duration such as 10s, got %q", flagOf(d.env), *vals[d.env])
		}
	}
	if c.EventBuffer, err = strconv.Atoi(*vals["KILN_EVENTS_BUFFER"]); err != nil || c.EventBuffer < 1 {
		return nil, fs, fmt.Errorf("events-buffer: must be a positive integer, got %q", *vals["KILN_EVENTS_BUFFER"])
	}
	if c.AuthMissTTL, err = time.ParseDuration(*vals["KILN_AUTH_MISS_TTL"]); err != nil || c.AuthMissTTL < 0 {
		return nil, fs, fmt.Errorf("auth-miss-ttl: must be a duration such as 5s, got %q", *vals["KILN_AUTH_MISS_TTL"])
	}
	for _, l := range []struct {
		rate, burst string
		dst         *ratelimit.Limit
	}{{"KILN_RATE_READS", "KILN_RATE_READS_BURST", &c.RateLimits.Reads},
		{"KILN_RATE_WRITES", "KILN_RATE_WRITES_BURST", &c.RateLimits.Writes},
		{"KILN_RATE_ANONYMOUS", "KILN_RATE_ANONYMOUS_BURST", &c.RateLimits.Anonymous}} {
		if *l.dst, err = parseLimit(l.rate, l.burst, vals); err != nil {
			return nil, fs, err
		}
	}
	if c.RateLimits.TrustedProxies, err = parsePrefixes(*vals["KILN_TRUSTED_PROXIES"]); err != nil {
		return nil, fs, fmt.Errorf("trusted-proxies: %w", err)
	}
	if c.StreamsPerToken, err = strconv.Atoi(*vals["KILN_STREAMS_PER_TOKEN"]); err != nil || c.StreamsPerToken < 0 {
		return nil, fs, fmt.Errorf("streams-per-token: must be a non-negative integer, got %q", *vals["KILN_STREAMS_PER_TOKEN"])
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{"KILN_HTTP_READ_HEADER_TIMEOUT", &c.HTTPReadHeaderTimeout}, {"KILN_HTTP_BODY_TIMEOUT", &c.HTTPBodyTimeout},
		{"KILN_HTTP_WRITE_TIMEOUT", &c.HTTPWriteTimeout}, {"KILN_HTTP_IDLE_TIMEOUT", &c.HTTPIdleTimeout}} {
		if *d.dst, err = time.ParseDuration(*vals[d.env]); err != nil || *d.dst <= 0 {
			return nil, fs, fmt.Errorf("%s: must be a positive duration such as 15s, got %q", flagOf(d.env), *vals[d.env])
		}
	}
	if c.HTTPMaxConns, err = strconv.Atoi(*vals["KILN_HTTP_MAX_CONNS"]); err != nil || c.HTTPMaxConns < 1 {
		return nil, fs, fmt.Errorf("http-max-conns: must be a positive integer, got %q", *vals["KILN_HTTP_MAX_CONNS"])
	}
	if c.DBSchema != "" && !schemaName.MatchString(c.DBSchema) {
		return nil, fs, fmt.Errorf("db-schema: must match %s, got %q", schemaName, c.DBSchema)
	}
	return c, fs, nil
}

func flagOf(env string) string {
	for _, s := range Settings {
		if s.Env == env {
			return s.Flag
		}
	}
	return env
}

// parsePublicURL checks KILN_PUBLIC_URL: empty (not configured), or an
// absolute http or https URL with a host and nothing a base URL cannot
// carry (user info, a query, a fragment). A trailing slash is trimmed, so
// paths join onto it with one.
func parsePublicURL(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	const want = "must be an absolute http or https URL such as https://kiln.example.com"
	u, err := url.Parse(v)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		return "", fmt.Errorf("%s: %v", want, err)
	}
	shown := u.Redacted() // a password is not repeated in the error
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%s, got %q", want, shown)
	case u.Hostname() == "":
		return "", fmt.Errorf("must name a host, as in https://kiln.example.com, got %q", shown)
	case u.User != nil:
		return "", fmt.Errorf("must not carry user info (user@ or user:password@), got %q", shown)
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("must not have a query (?...), got %q", shown)
	case u.Fragment != "" || strings.Contains(v, "#"):
		return "", fmt.Errorf("must not have a fragment (#...), got %q", shown)
	}
	return strings.TrimRight(v, "/"), nil
}

// parseLimit reads the settings rateEnv (requests a second; 0: no limit)
// and burstEnv into a limit.
func parseLimit(rateEnv, burstEnv string, vals map[string]*string) (ratelimit.Limit, error) {
	rate, burst := *vals[rateEnv], *vals[burstEnv]
	r, err := strconv.ParseFloat(rate, 64)
	if err != nil || r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return ratelimit.Limit{}, fmt.Errorf("%s: must be a non-negative number of requests a second (0: no limit), got %q", flagOf(rateEnv), rate)
	}
	if r == 0 {
		return ratelimit.Unlimited, nil
	}
	b, err := strconv.Atoi(burst)
	if err != nil || b < 1 {
		return ratelimit.Limit{}, fmt.Errorf("%s: must be a positive integer, got %q", flagOf(burstEnv), burst)
	}
	return ratelimit.Limit{Rate: r, Burst: b}, nil
}

// parsePrefixes reads comma-separated CIDRs or addresses (an address is its /32 or /128).
func parsePrefixes(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR or an IP address", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
