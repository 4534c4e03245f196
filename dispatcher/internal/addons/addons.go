package addons

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Addon provisions one kind of add-on for one project. Both methods are
// idempotent.
type Addon interface {
	// Type is the add-on's type name, as the API spells it: "postgres", "redis".
	Type() string
	// Provision creates the project's add-on, or converges an existing one
	// (resetting its password), and returns the environment the workspace needs.
	Provision(ctx context.Context, p Project) (Credentials, error)
	// Deprovision removes the project's add-on and its data; absent is fine.
	Deprovision(ctx context.Context, p Project) error
}

// Project is what an add-on is provisioned for.
type Project struct {
	ID   string // Kiln's project id; only named in errors
	Name string // the project's name, a DNS label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters
}

// Credentials is what a provisioned add-on gives the workspace: environment
// variables such as DATABASE_URL or REDIS_URL. The values are secrets: store
// them in a Kubernetes Secret, never log them.
type Credentials struct {
	Env map[string]string
}

// Names returns the environment variable names, sorted: what the API may show.
func (c Credentials) Names() []string { return slices.Sorted(maps.Keys(c.Env)) }

// Config configures the add-ons [New] builds.
type Config struct {
	// AdminURL holds, by add-on type, the admin URL of the server that type
	// provisions on: "postgres" → postgres://admin:pw@host:5432/postgres,
	// "redis" → redis://admin:pw@host:6379. Planned settings:
	// KILN_ADDON_<TYPE>_URL (KILN_ADDON_POSTGRES_URL, KILN_ADDON_REDIS_URL).
	AdminURL map[string]string
	// Logger receives one line per provisioned or removed add-on, never a
	// secret. Default: discard.
	Logger *slog.Logger
}

// ErrUnknownType is returned by [New] for a type no add-on registered.
var ErrUnknownType = errors.New("unknown add-on type")

// ErrNotConfigured is returned by [New] when the type has no admin URL.
var ErrNotConfigured = errors.New("add-on server not configured")

// ErrInvalidProject is returned when a Project's name is not a DNS label.
var ErrInvalidProject = errors.New("invalid project")

type factory func(adminURL string, log *slog.Logger) (Addon, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]factory{}
	envNames   = map[string][]string{}
)

// register makes an add-on type available to New; each add-on's file calls
// it from init, with the environment variables its Credentials set.
func register(typ string, env []string, f factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[typ]; dup {
		panic("addons: type registered twice: " + typ)
	}
	registry[typ] = f
	envNames[typ] = env
}

// EnvNames returns the environment variables an add-on of type typ sets
// (postgres: DATABASE_URL); nil for an unknown type.
func EnvNames(typ string) []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Clone(envNames[typ])
}

// Types returns the registered add-on types, sorted.
func Types() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Sorted(maps.Keys(registry))
}

// New returns the add-on of type typ on the server cfg.AdminURL[typ] names.
func New(typ string, cfg Config) (Addon, error) {
	registryMu.RLock()
	f, ok := registry[typ]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownType, typ, strings.Join(Types(), ", "))
	}
	u := cfg.AdminURL[typ]
	if u == "" {
		return nil, fmt.Errorf("add-on %s: %w (set KILN_ADDON_%s_URL)", typ, ErrNotConfigured, strings.ToUpper(typ))
	}
	return f(u, cfg.Logger)
}

func logger(l *slog.Logger, typ string) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", "addons", "addon", typ)
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// validate checks that p's name can be turned into server-side names.
func (p Project) validate() error {
	if !dnsLabel.MatchString(p.Name) {
		return fmt.Errorf("%w: name %q must be a DNS label (lower-case letters, digits and '-', at most 63)", ErrInvalidProject, p.Name)
	}
	return nil
}

// newPassword returns 192 random bits, hex encoded: safe in URLs, SQL
// literals and Redis arguments without escaping.
func newPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// redact replaces every secret in s; errors from servers pass through it.
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// redactedError is a server error's text with the secrets removed. It does
// not keep the original error, whose fields may hold a secret (a connection
// error holds the admin URL's config); it unwraps only to a context error,
// so callers can still tell a cancellation.
type redactedError struct {
	msg   string
	cause error // context.Canceled, context.DeadlineExceeded or nil
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// scrub returns err as "doing: message" with the secrets removed.
func scrub(doing string, err error, secrets ...string) error {
	e := &redactedError{msg: doing + ": " + redact(err.Error(), secrets...)}
	for _, c := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, c) {
			e.cause = c
		}
	}
	return e
}
