package gitserver

import (
	"bytes"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Realm is the Basic-auth realm the server names in its 401 answers.
const Realm = "kiln-test"

// Options configure Start. Both fields are required: every request (clone,
// fetch, push) must carry them as HTTP Basic credentials.
type Options struct {
	// Username is the Basic-auth user name the server accepts.
	Username string
	// Token is the Basic-auth password the server accepts.
	Token string
}

// Request is one HTTP request the server saw. It never holds the token.
type Request struct {
	Method string
	// Path is the URL path, such as "/demo.git/info/refs".
	Path string
	// Service is "git-upload-pack" (clone, fetch) or "git-receive-pack"
	// (push) when the request names one, else empty.
	Service string
	// User is the Basic-auth user name the request presented, empty when
	// it sent no credentials.
	User string
	// Authenticated is true when the credentials matched and the request
	// was passed to git http-backend; false when it was refused with 401.
	Authenticated bool
}

// Server is a git smart-HTTP server on 127.0.0.1 that requires Basic auth.
type Server struct {
	root string // GIT_PROJECT_ROOT: the bare repositories
	home string // HOME for the git processes the server runs
	h    *Handler
	srv  *httptest.Server

	mu   sync.Mutex
	reqs []Request
}

// Start starts a server on 127.0.0.1 at a free port; it stops at t's
// cleanup. It fails t when git or git-http-backend cannot be found or when
// opts lacks a field.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir() // removed after the server closes (cleanups run last-in first-out)
	s := &Server{root: filepath.Join(dir, "repos"), home: filepath.Join(dir, "home")}
	for _, d := range []string{s.root, s.home} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("gitserver: %v", err)
		}
	}
	h, err := NewHandler(HandlerOptions{
		Root: s.root, Home: s.home, Username: opts.Username, Token: opts.Token,
		Log: testWriter{t},
		OnRequest: func(r Request) {
			s.mu.Lock()
			s.reqs = append(s.reqs, r)
			s.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("%v", err)
	}
	s.h = h
	s.srv = httptest.NewServer(h)
	t.Cleanup(s.srv.Close) // waits for requests in flight
	return s
}

// URL is the server's base URL, http://127.0.0.1:PORT, without credentials.
func (s *Server) URL() string { return s.srv.URL }

// Requests returns a copy of the requests seen so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

var segment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// NewRepo creates the bare repository <name>.git whose branch holds one
// commit of files (slash-separated relative path to content), and returns
// its clone URL, http://127.0.0.1:PORT/<name>.git, without credentials.
// name is one or more slash-separated segments of letters, digits, '.', '_'
// and '-', not ending in ".git".
func (s *Server) NewRepo(t testing.TB, name, branch string, files map[string]string) string {
	t.Helper()
	for _, seg := range strings.Split(name, "/") {
		if !segment.MatchString(seg) {
			t.Fatalf("gitserver: repository name %q: each '/'-separated part must be letters, digits, '.', '_' or '-', not starting with '.'", name)
		}
	}
	if strings.HasSuffix(name, ".git") {
		t.Fatalf("gitserver: repository name %q: leave out the .git suffix", name)
	}
	if out, err := exec.Command(s.h.git, "check-ref-format", "--branch", branch).CombinedOutput(); err != nil || branch == "" {
		t.Fatalf("gitserver: branch %q: not a valid branch name: %s", branch, bytes.TrimSpace(out))
	}
	bare := filepath.Join(s.root, filepath.FromSlash(name)+".git")
	if _, err := os.Stat(bare); err == nil {
		t.Fatalf("gitserver: repository %q already exists", name)
	}

	work := t.TempDir()
	for p, content := range files {
		clean := path.Clean(p)
		if p == "" || path.IsAbs(p) || clean != p || clean == "." || strings.HasPrefix(clean, "../") || clean == ".." ||
			clean == ".git" || strings.HasPrefix(clean, ".git/") {
			t.Fatalf("gitserver: file path %q: must be a clean relative path outside .git", p)
		}
		full := filepath.Join(work, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatalf("gitserver: %v", err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatalf("gitserver: %v", err)
		}
	}
	s.run(t, "", "init", "--quiet", "--bare", "--initial-branch="+branch, bare)
	s.run(t, bare, "config", "http.receivepack", "true")
	s.runWork(t, bare, work, "add", "--all")
	s.runWork(t, bare, work, "commit", "--quiet", "--allow-empty", "--message", "initial commit")
	if err := os.Remove(filepath.Join(bare, "index")); err != nil && !os.IsNotExist(err) {
		t.Fatalf("gitserver: %v", err)
	}
	return s.srv.URL + "/" + name + ".git"
}

// Head returns the commit that branch points at in the bare repository
// name. It fails t when the repository or the branch does not exist.
func (s *Server) Head(t testing.TB, name, branch string) string {
	t.Helper()
	bare := filepath.Join(s.root, filepath.FromSlash(name)+".git")
	return strings.TrimSpace(s.run(t, bare, "rev-parse", "--verify", "--quiet", "refs/heads/"+branch+"^{commit}"))
}

// run runs git in gitDir (a bare repository; none when empty) with an
// environment that ignores the user's and the system's git configuration.
func (s *Server) run(t testing.TB, gitDir string, args ...string) string {
	t.Helper()
	return s.runWork(t, gitDir, "", args...)
}

func (s *Server) runWork(t testing.TB, gitDir, workTree string, args ...string) string {
	t.Helper()
	cmd := exec.Command(s.h.git, args...)
	cmd.Env = append(os.Environ(),
		"HOME="+s.home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=gitserver", "GIT_AUTHOR_EMAIL=gitserver@kiln.test",
		"GIT_COMMITTER_NAME=gitserver", "GIT_COMMITTER_EMAIL=gitserver@kiln.test",
	)
	if gitDir != "" {
		cmd.Env = append(cmd.Env, "GIT_DIR="+gitDir)
	}
	if workTree != "" {
		cmd.Env = append(cmd.Env, "GIT_WORK_TREE="+workTree)
		cmd.Dir = workTree
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gitserver: git %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out)
}

// testWriter sends git-http-backend's stderr and the CGI handler's errors to
// the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
