package addons

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/tests/servers"
)

// The servers every test in this package shares; each test uses its own
// project names.
var (
	pgServer    *servers.Postgres
	redisServer *servers.Redis
)

func TestMain(m *testing.M) {
	code := run(m)
	// childproc's forking thread lives as long as the process, by design.
	if err := goleak.Find(goleak.IgnoreTopFunction("github.com/kilnbuild/kiln/tests/childproc.Start.func1.1")); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "addons tests: leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}

// run starts the servers, runs the tests and stops the servers.
func run(m *testing.M) int {
	var err error
	if pgServer, err = servers.StartPostgres(); err != nil {
		fmt.Fprintln(os.Stderr, "addons tests:", err)
		return 1
	}
	defer pgServer.Stop()
	if redisServer, err = servers.StartRedis(); err != nil {
		fmt.Fprintln(os.Stderr, "addons tests:", err)
		return 1
	}
	defer redisServer.Stop()
	return m.Run()
}

// projectName returns a project name no other test uses.
func projectName(t *testing.T) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "p-" + hex.EncodeToString(b)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newAddon builds the add-on typ on the shared servers with a captured log.
func newAddon(t *testing.T, typ string) (Addon, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	a, err := New(typ, Config{
		AdminURL: map[string]string{"postgres": pgServer.AdminURL, "redis": redisServer.AdminURL},
		Logger:   slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("New(%q): %v", typ, err)
	}
	return a, logs
}

// generatedSecret matches what newPassword makes, and the servers' own
// random passwords: no error or log line may contain one.
var generatedSecret = regexp.MustCompile(`[0-9a-f]{32,}`)

func assertNoSecret(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a password: %s", what, text)
		}
	}
	if m := generatedSecret.FindString(text); m != "" {
		t.Errorf("%s contains something shaped like a generated password (%s): %s", what, m, text)
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	if diff := cmp.Diff([]string{"postgres", "redis"}, Types()); diff != "" {
		t.Errorf("Types() (-want +got):\n%s", diff)
	}
	if _, err := New("mysql", Config{}); !errors.Is(err, ErrUnknownType) || !strings.Contains(err.Error(), "postgres, redis") {
		t.Errorf("New(mysql) = %v; want ErrUnknownType listing the known types", err)
	}
	_, err := New("redis", Config{AdminURL: map[string]string{"postgres": "postgres://h"}})
	if !errors.Is(err, ErrNotConfigured) || !strings.Contains(err.Error(), "KILN_ADDON_REDIS_URL") {
		t.Errorf("New(redis) without its URL = %v; want ErrNotConfigured naming KILN_ADDON_REDIS_URL", err)
	}
	for _, typ := range Types() {
		a, _ := newAddon(t, typ)
		if a.Type() != typ {
			t.Errorf("New(%q).Type() = %q", typ, a.Type())
		}
	}
}

func TestAdminURLErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		typ, url, want string
	}{
		{"postgres", "mysql://admin:s3cretpw@db:5432/x", "must start with postgres://"},
		{"postgres", "postgres://admin:s3cretpw%zz@db:5432/x", "does not parse"},
		{"postgres", "postgres://admin:s3cretpw@/x", "no host"},
		{"postgres", "postgres://admin:s3cretpw@db:5432/x?sslmode=bogus", "admin URL"},
		{"redis", "rediss://admin:s3cretpw@cache:6379", "must start with redis://"},
		{"redis", "redis://admin:s3cretpw@cache:notaport", "does not parse"},
	} {
		_, err := New(tc.typ, Config{AdminURL: map[string]string{tc.typ: tc.url}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s, %q) = %v; want an error containing %q", tc.typ, tc.url, err, tc.want)
			continue
		}
		assertNoSecret(t, "the error for "+tc.url, err.Error(), "s3cretpw")
	}
}

func TestInvalidProjectName(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	for _, typ := range Types() {
		a, _ := newAddon(t, typ)
		for _, name := range []string{"", "Upper", "under_score", "-lead", "trail-", strings.Repeat("a", 64), "a:b", "a*"} {
			if _, err := a.Provision(ctx, Project{ID: "x", Name: name}); !errors.Is(err, ErrInvalidProject) {
				t.Errorf("%s: Provision(%q) = %v; want ErrInvalidProject", typ, name, err)
			}
			if err := a.Deprovision(ctx, Project{ID: "x", Name: name}); !errors.Is(err, ErrInvalidProject) {
				t.Errorf("%s: Deprovision(%q) = %v; want ErrInvalidProject", typ, name, err)
			}
		}
	}
}

func TestCredentialsNames(t *testing.T) {
	t.Parallel()
	c := Credentials{Env: map[string]string{"REDIS_URL": "x", "DATABASE_URL": "y"}}
	if diff := cmp.Diff([]string{"DATABASE_URL", "REDIS_URL"}, c.Names()); diff != "" {
		t.Errorf("Names() (-want +got):\n%s", diff)
	}
}

func newTestLogger(w *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func itoa(n int) string { return fmt.Sprint(n) }
