package gitserver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/gitserver"
)

const user = "kiln-bot"

type bundle struct {
	srv   *gitserver.Server
	token string
	url   string // the "demo" repository's clone URL
	home  string // HOME for the git client
	files map[string]string
}

// setup starts a server with a fresh random token and one repository,
// "demo", whose main branch holds two files.
func setup(t *testing.T) bundle {
	t.Helper()
	b := bundle{token: randomToken(t), home: t.TempDir()}
	b.srv = gitserver.Start(t, gitserver.Options{Username: user, Token: b.token})
	b.files = map[string]string{"README.md": "demo\n", "src/main.go": "package main\n"}
	b.url = b.srv.NewRepo(t, "demo", "main", b.files)
	return b
}

func randomToken(t *testing.T) string {
	t.Helper()
	p := make([]byte, 16)
	_, err := rand.Read(p)
	require.NoError(t, err)
	return "tok-" + hex.EncodeToString(p)
}

// gitEnv is an environment for the git client that ignores the user's and
// the system's git configuration and never prompts on a terminal.
func gitEnv(home string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "SSH_ASKPASS=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"HOME="+home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@kiln.test",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@kiln.test",
	)
	return append(env, extra...)
}

type result struct {
	stdout, stderr string
	err            error
}

// git runs the real git client in dir with env; a generous timeout keeps a
// hung git from hanging the suite on a loaded machine.
func git(t *testing.T, env []string, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = env
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

// mustGit runs git and fails the test, with git's stderr, when it fails.
func mustGit(t *testing.T, env []string, dir string, args ...string) string {
	t.Helper()
	r := git(t, env, dir, args...)
	require.NoError(t, r.err, "git %s failed: %s", strings.Join(args, " "), r.stderr)
	return strings.TrimSpace(r.stdout)
}

// helperFlag is `-c credential.helper=...` giving user and token on argv of
// the helper's own definition only: the token is in the shell function, not
// in the URL or in the clone's configuration.
func helperFlag(token string) []string {
	return []string{"-c", "credential.helper=!f() { echo username=" + user + "; echo password=" + token + "; }; f"}
}

// assertNoTokenIn fails when token appears in any file under the clone's
// .git directory, or when its origin URL is not the plain url.
func assertNoTokenIn(t *testing.T, env []string, clone, url, token string) {
	t.Helper()
	assert.Equal(t, url, mustGit(t, env, clone, "remote", "get-url", "origin"), "the remote URL must be the plain URL")
	cfg, err := os.ReadFile(filepath.Join(clone, ".git", "config"))
	require.NoError(t, err)
	assert.NotContains(t, string(cfg), token, ".git/config must not hold the token")
	assert.NotContains(t, string(cfg), user+"@", ".git/config must not hold credentials in a URL")
	err = filepath.WalkDir(filepath.Join(clone, ".git"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		assert.NotContains(t, string(b), token, "%s must not hold the token", p)
		return nil
	})
	require.NoError(t, err)
}

// assertClonedHead checks the clone has the repository's files at the
// server's branch head.
func assertClonedHead(t *testing.T, b bundle, env []string, clone string) {
	t.Helper()
	for name, content := range b.files {
		got, err := os.ReadFile(filepath.Join(clone, filepath.FromSlash(name)))
		require.NoError(t, err, "the clone must hold %s", name)
		assert.Equal(t, content, string(got), "content of %s in the clone", name)
	}
	assert.Equal(t, b.srv.Head(t, "demo", "main"), mustGit(t, env, clone, "rev-parse", "HEAD"), "the clone must be at the branch head")
}

func authenticated(reqs []gitserver.Request, service string) int {
	n := 0
	for _, r := range reqs {
		if r.Authenticated && r.Service == service {
			n++
		}
	}
	return n
}

func TestAnswers401WithoutTheRightCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	refs := b.url + "/info/refs?service=git-upload-pack"
	client := &http.Client{Timeout: time.Minute}
	defer client.CloseIdleConnections()

	get := func(username, token string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, refs, nil)
		require.NoError(t, err)
		if username != "" {
			req.SetBasicAuth(username, token)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, c := range []struct{ name, user, token string }{
		{"no credentials", "", ""},
		{"wrong token", user, b.token + "x"},
		{"wrong user", "someone", b.token},
	} {
		resp := get(c.user, c.token)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s: status", c.name)
		assert.Equal(t, `Basic realm="kiln-test"`, resp.Header.Get("WWW-Authenticate"), "%s: challenge", c.name)
	}
	resp := get(user, b.token)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the right credentials must reach git http-backend")
	assert.Equal(t, "application/x-git-upload-pack-advertisement", resp.Header.Get("Content-Type"))

	want := []gitserver.Request{
		{Method: "GET", Path: "/demo.git/info/refs", Service: "git-upload-pack", User: "", Authenticated: false},
		{Method: "GET", Path: "/demo.git/info/refs", Service: "git-upload-pack", User: user, Authenticated: false},
		{Method: "GET", Path: "/demo.git/info/refs", Service: "git-upload-pack", User: "someone", Authenticated: false},
		{Method: "GET", Path: "/demo.git/info/refs", Service: "git-upload-pack", User: user, Authenticated: true},
	}
	assert.Equal(t, want, b.srv.Requests(), "Requests() must record each refusal and the accepted request")
}

func TestCloneWithCredentialHelper(t *testing.T) {
	t.Parallel()
	b := setup(t)
	env := gitEnv(b.home)
	clone := filepath.Join(t.TempDir(), "clone")

	mustGit(t, env, "", append(helperFlag(b.token), "clone", "--branch", "main", b.url, clone)...)

	assertClonedHead(t, b, env, clone)
	assertNoTokenIn(t, env, clone, b.url, b.token)
	assert.Positive(t, authenticated(b.srv.Requests(), "git-upload-pack"), "the clone must have been let in: %+v", b.srv.Requests())
}

func TestCloneWithAskPass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	askpass := filepath.Join(t.TempDir(), "askpass.sh")
	script := "#!/bin/sh\ncase \"$1\" in\nUsername*) echo \"$KILN_TEST_GIT_USER\" ;;\n*) echo \"$KILN_TEST_GIT_TOKEN\" ;;\nesac\n"
	require.NoError(t, os.WriteFile(askpass, []byte(script), 0o700))
	env := gitEnv(b.home, "GIT_ASKPASS="+askpass, "KILN_TEST_GIT_USER="+user, "KILN_TEST_GIT_TOKEN="+b.token)
	clone := filepath.Join(t.TempDir(), "clone")

	mustGit(t, env, "", "clone", "--branch", "main", b.url, clone)

	assertClonedHead(t, b, env, clone)
	assertNoTokenIn(t, env, clone, b.url, b.token)
}

func TestCloneWithWrongTokenFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	env := gitEnv(b.home)
	clone := filepath.Join(t.TempDir(), "clone")

	r := git(t, env, "", append(helperFlag("not-"+b.token), "clone", b.url, clone)...)

	require.Error(t, r.err, "a clone with a wrong token must fail")
	assert.Contains(t, r.stderr, "Authentication failed", "git must say why the clone failed")
	reqs := b.srv.Requests()
	assert.Zero(t, authenticated(reqs, "git-upload-pack"), "no request may be let in: %+v", reqs)
	assert.Contains(t, reqs, gitserver.Request{Method: "GET", Path: "/demo.git/info/refs", Service: "git-upload-pack", User: user},
		"Requests() must record the refusal of the wrong token")
	_, err := os.Stat(clone)
	assert.ErrorIs(t, err, fs.ErrNotExist, "a failed clone leaves no directory")
}

func TestPushNeedsTheToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	env := gitEnv(b.home)
	clone := filepath.Join(t.TempDir(), "clone")
	mustGit(t, env, "", append(helperFlag(b.token), "clone", b.url, clone)...)
	before := b.srv.Head(t, "demo", "main")

	require.NoError(t, os.WriteFile(filepath.Join(clone, "change.txt"), []byte("one\n"), 0o644))
	mustGit(t, env, clone, "add", "change.txt")
	mustGit(t, env, clone, "commit", "--quiet", "-m", "a change")
	commit := mustGit(t, env, clone, "rev-parse", "HEAD")
	require.NotEqual(t, before, commit)

	// Without credentials (the clone keeps none) the push is refused.
	r := git(t, env, clone, "push", "origin", "HEAD:main")
	require.Error(t, r.err, "a push without the token must fail")
	assert.Contains(t, r.stderr, "could not read Username", "git must say it had no credentials")
	assert.Equal(t, before, b.srv.Head(t, "demo", "main"), "a refused push must not move the branch")
	assert.Contains(t, b.srv.Requests(), gitserver.Request{Method: "GET", Path: "/demo.git/info/refs", Service: "git-receive-pack"},
		"Requests() must record the refused push")

	// With a wrong token it is refused too.
	r = git(t, env, clone, append(helperFlag("not-"+b.token), "push", "origin", "HEAD:main")...)
	require.Error(t, r.err, "a push with a wrong token must fail")
	assert.Contains(t, r.stderr, "Authentication failed")
	assert.Equal(t, before, b.srv.Head(t, "demo", "main"), "a refused push must not move the branch")
	assert.Zero(t, authenticated(b.srv.Requests(), "git-receive-pack"), "no push may have been let in yet")

	// With the token it lands.
	mustGit(t, env, clone, append(helperFlag(b.token), "push", "origin", "HEAD:main")...)
	assert.Equal(t, commit, b.srv.Head(t, "demo", "main"), "the push must move the branch to the pushed commit")
	assert.Positive(t, authenticated(b.srv.Requests(), "git-receive-pack"), "the push must have been let in")
	assertNoTokenIn(t, env, clone, b.url, b.token)
}

// The git configuration that the package documentation gives runners, with
// the Secret's mount point as %DIR% and the repository host as %HOST%. Keep
// it identical to the lines in doc.go.
const documentedConfig = `[credential "%HOST%"]
	helper =
	helper = "!f() { test \"$1\" = get || exit 0; printf 'username=%s\\npassword=%s\\n' \"$(cat %DIR%/username)\" \"$(cat %DIR%/token)\"; }; f"
`

func TestDocumentedConfigIsTheTestedOne(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	lines := strings.NewReplacer("%HOST%", "https://git.example.com", "%DIR%", "/var/run/kiln/git").Replace(documentedConfig)
	var commented strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(lines, "\n"), "\n") {
		commented.WriteString("//\t" + l + "\n")
	}
	assert.True(t, strings.Contains(string(doc), commented.String()),
		"doc.go must give runners the configuration TestCredentialHelperFromFile runs, these lines:\n%s", commented.String())
}

func TestCredentialHelperFromFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The Secret as a runner would see it mounted: read-only files.
	secret := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(secret, "username"), []byte(user+"\n"), 0o400))
	require.NoError(t, os.WriteFile(filepath.Join(secret, "token"), []byte(b.token+"\n"), 0o400))
	cfg := strings.NewReplacer("%HOST%", b.srv.URL(), "%DIR%", secret).Replace(documentedConfig)
	gitconfig := filepath.Join(secret, "gitconfig")
	require.NoError(t, os.WriteFile(gitconfig, []byte(cfg), 0o400))
	require.NoError(t, os.Chmod(secret, 0o500))
	t.Cleanup(func() { _ = os.Chmod(secret, 0o700) }) // so TempDir can remove it

	// gitEnv sets GIT_CONFIG_NOSYSTEM=1; drop it so GIT_CONFIG_SYSTEM counts.
	var env []string
	for _, kv := range gitEnv(b.home, "GIT_CONFIG_SYSTEM="+gitconfig) {
		if kv != "GIT_CONFIG_NOSYSTEM=1" {
			env = append(env, kv)
		}
	}
	work := t.TempDir()
	a, c := filepath.Join(work, "a"), filepath.Join(work, "c")

	// Clone, twice.
	mustGit(t, env, "", "clone", "--branch", "main", b.url, a)
	mustGit(t, env, "", "clone", "--branch", "main", b.url, c)
	assertClonedHead(t, b, env, a)

	// Push from c, then fetch it into a.
	require.NoError(t, os.WriteFile(filepath.Join(c, "from-c.txt"), []byte("c\n"), 0o644))
	mustGit(t, env, c, "add", "from-c.txt")
	mustGit(t, env, c, "commit", "--quiet", "-m", "from c")
	mustGit(t, env, c, "push", "origin", "main")
	pushed := mustGit(t, env, c, "rev-parse", "HEAD")
	require.Equal(t, pushed, b.srv.Head(t, "demo", "main"), "the push from c must land")

	mustGit(t, env, a, "fetch", "origin")
	assert.Equal(t, pushed, mustGit(t, env, a, "rev-parse", "origin/main"), "the fetch must bring c's commit")

	// Push from a on top of it.
	mustGit(t, env, a, "merge", "--quiet", "--ff-only", "origin/main")
	require.NoError(t, os.WriteFile(filepath.Join(a, "from-a.txt"), []byte("a\n"), 0o644))
	mustGit(t, env, a, "add", "from-a.txt")
	mustGit(t, env, a, "commit", "--quiet", "-m", "from a")
	mustGit(t, env, a, "push", "origin", "main")
	assert.Equal(t, mustGit(t, env, a, "rev-parse", "HEAD"), b.srv.Head(t, "demo", "main"), "the push from a must land")

	// git sees the helper (so the check below is not vacuous) but never the token.
	list := mustGit(t, env, a, "config", "--list", "--show-origin")
	assert.Contains(t, list, "credential."+b.srv.URL()+".helper=!f()", "git config --list must show the documented helper")
	assert.NotContains(t, list, b.token, "git config --list must not show the token")
	for _, clone := range []string{a, c} {
		assertNoTokenIn(t, env, clone, b.url, b.token)
	}
	for _, r := range b.srv.Requests() {
		if r.User != "" {
			assert.Equal(t, user, r.User, "the helper must give the Secret's user name")
		}
	}
	assert.Positive(t, authenticated(b.srv.Requests(), "git-receive-pack"))
}
