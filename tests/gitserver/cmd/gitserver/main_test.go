package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is the command's stderr, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServesABareRepositoryToTheAccount starts the command on a directory
// holding a plain `git init --bare` repository (no http.receivepack of its
// own) and pushes to it and clones it with the token, while a wrong token is
// refused and never logged.
func TestServesABareRepositoryToTheAccount(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "repos")
	require.NoError(t, os.Mkdir(root, 0o755))
	const token = "tok-cmd-test-1234"
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	addrFile := filepath.Join(dir, "addr")
	gitEnv := append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@kiln.test", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@kiln.test")
	git := func(wd string, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = wd, gitEnv
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := git(dir, "init", "-q", "--bare", "-b", "main", filepath.Join(root, "acme.git"))
	require.NoError(t, err, out)

	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-root", root, "-user", "kiln", "-token-file", tokenFile, "-addr-file", addrFile}, &stderr)
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	var url string
	for i := 0; i < 200 && url == ""; i++ {
		if b, err := os.ReadFile(addrFile); err == nil {
			url = strings.TrimSpace(string(b))
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	require.NotEmpty(t, url, "no -addr-file; stderr: %s", stderr.String())
	helper := func(tok string) []string {
		return []string{"-c", "credential.helper=", "-c", "credential.helper=!f() { echo username=kiln; echo password=" + tok + "; }; f"}
	}

	work := filepath.Join(dir, "work")
	out, err = git(dir, "init", "-q", "-b", "main", work)
	require.NoError(t, err, out)
	require.NoError(t, os.WriteFile(filepath.Join(work, "a.txt"), []byte("a\n"), 0o644))
	_, err = git(work, "add", "a.txt")
	require.NoError(t, err)
	_, err = git(work, "commit", "-qm", "first")
	require.NoError(t, err)

	out, err = git(work, append(helper("wrong-token"), "push", url+"/acme.git", "main")...)
	require.Error(t, err, "a push with a wrong token must be refused")
	assert.Contains(t, out, "Authentication failed")

	out, err = git(work, append(helper(token), "push", "-q", url+"/acme.git", "main")...)
	require.NoError(t, err, "push with the token: %s", out)
	out, err = git(dir, append(helper(token), "clone", "-q", url+"/acme.git", filepath.Join(dir, "clone"))...)
	require.NoError(t, err, "clone with the token: %s", out)
	b, err := os.ReadFile(filepath.Join(dir, "clone", "a.txt"))
	require.NoError(t, err)
	assert.Equal(t, "a\n", string(b))

	log := stderr.String()
	assert.Contains(t, log, `service=git-receive-pack user="kiln" authenticated=true`)
	assert.Contains(t, log, "authenticated=false")
	assert.NotContains(t, log, token, "the token must never be logged")
	assert.NotContains(t, log, "wrong-token")
}
