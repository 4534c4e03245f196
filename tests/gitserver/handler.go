package gitserver

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// HandlerOptions configure NewHandler.
type HandlerOptions struct {
	// Root is the directory of bare repositories served (GIT_PROJECT_ROOT):
	// Root/acme.git is cloned as <server>/acme.git. Required.
	Root string
	// Home is HOME for the git processes the handler runs. Required.
	Home string
	// Username and Token are the one Basic-auth account every request must
	// present. Required; Username without ':'.
	Username string
	Token    string
	// ReceivePack enables push into every repository under Root; when false
	// only repositories with http.receivepack=true (as NewRepo makes them)
	// accept pushes.
	ReceivePack bool
	// Log receives git-http-backend's stderr and the CGI handler's errors
	// (default: discarded). It never receives the token.
	Log io.Writer
	// OnRequest, when set, is called with each request before it is served
	// or refused (from the request's goroutine).
	OnRequest func(Request)
}

// Handler serves the bare repositories under a directory over git smart
// HTTP (git http-backend through net/http/cgi) to requests carrying the one
// account's Basic credentials, and answers every other request 401. Start
// serves one for a test; cmd/gitserver serves one on its own.
type Handler struct {
	opts    HandlerOptions
	git     string
	backend string
	logger  *log.Logger
}

// NewHandler checks opts and finds git and git-http-backend.
func NewHandler(opts HandlerOptions) (*Handler, error) {
	if opts.Username == "" || strings.Contains(opts.Username, ":") {
		return nil, fmt.Errorf("gitserver: Options.Username: required, without ':' (got %q)", opts.Username)
	}
	if opts.Token == "" {
		return nil, errors.New("gitserver: Options.Token: required")
	}
	if opts.Root == "" || opts.Home == "" {
		return nil, errors.New("gitserver: HandlerOptions.Root and Home: required")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("gitserver: finding git: %w", err)
	}
	out, err := exec.Command(gitPath, "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("gitserver: git --exec-path: %w", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return nil, fmt.Errorf("gitserver: finding git-http-backend: %w", err)
	}
	return &Handler{opts: opts, git: gitPath, backend: backend, logger: log.New(opts.Log, "gitserver: ", 0)}, nil
}

// ServeHTTP checks the request's credentials in constant time and passes
// it to git http-backend, or answers 401 with WWW-Authenticate.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := Request{Method: r.Method, Path: r.URL.Path, Service: service(r)}
	user, token, ok := r.BasicAuth()
	if ok {
		req.User = user
	}
	// Both comparisons run every time, so timing says nothing about which failed.
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(h.opts.Username))
	tokenOK := subtle.ConstantTimeCompare([]byte(token), []byte(h.opts.Token))
	req.Authenticated = ok && userOK&tokenOK == 1
	if h.opts.OnRequest != nil {
		h.opts.OnRequest(req)
	}
	if !req.Authenticated {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	env := []string{
		"GIT_PROJECT_ROOT=" + h.opts.Root,
		"GIT_HTTP_EXPORT_ALL=1",
		"GIT_CONFIG_NOSYSTEM=1",
		"HOME=" + h.opts.Home,
		"REMOTE_USER=" + user,
	}
	if h.opts.ReceivePack {
		env = append(env, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.receivepack", "GIT_CONFIG_VALUE_0=true")
	}
	cgiH := &cgi.Handler{
		Path:       h.backend,
		Root:       "/",
		InheritEnv: []string{"PATH"},
		Env:        env,
		Logger:     h.logger,
		Stderr:     h.opts.Log,
	}
	cgiH.ServeHTTP(w, r)
}

// service names the git service a request is for.
func service(r *http.Request) string {
	if sv := r.URL.Query().Get("service"); sv != "" {
		return sv
	}
	switch base := path.Base(r.URL.Path); base {
	case "git-upload-pack", "git-receive-pack":
		return base
	}
	return ""
}
