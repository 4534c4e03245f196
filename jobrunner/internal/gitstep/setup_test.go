package gitstep

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is a working clone of a bare remote, with one commit on main.
type fixture struct {
	remote string // bare repository
	work   string // the project's working tree
	env    []string
	runner LocalRunner
}

func setup(t *testing.T) *fixture {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	s := &fixture{remote: filepath.Join(dir, "remote.git"), work: filepath.Join(dir, "work")}
	// git must not read the machine's or the user's configuration, nor identity variables.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			s.env = append(s.env, kv)
		}
	}
	s.env = append(s.env, "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
	s.runner = LocalRunner{Env: s.env}

	s.run(t, dir, "git", "init", "--quiet", "--bare", "--initial-branch=main", s.remote)
	s.run(t, dir, "git", "clone", "--quiet", s.remote, s.work)
	s.git(t, "checkout", "--quiet", "-b", "main")
	s.write(t, "README.md", "hello\n")
	s.git(t, "add", "-A")
	s.git(t, "commit", "--quiet", "-m", "initial")
	s.git(t, "push", "--quiet", "origin", "main")
	return s
}

// run runs a command that must succeed and returns its stdout.
func (s *fixture) run(t *testing.T, dir string, argv ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = s.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%q: %s", argv, stderr.String())
	return out
}

// git runs git in the working tree as the seed user.
func (s *fixture) git(t *testing.T, args ...string) []byte {
	t.Helper()
	return s.gitIn(t, s.work, args...)
}

func (s *fixture) gitIn(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	argv := append([]string{"git", "-c", "user.name=Seed", "-c", "user.email=seed@example.com"}, args...)
	return s.run(t, dir, argv...)
}

func (s *fixture) write(t *testing.T, name, content string) {
	t.Helper()
	p := filepath.Join(s.work, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
}

// pushFromElsewhere pushes a commit adding theirs.txt to the remote's main
// from another clone, as someone else would, and returns that commit.
func (s *fixture) pushFromElsewhere(t *testing.T) string {
	t.Helper()
	other := filepath.Join(t.TempDir(), "other")
	s.run(t, s.work, "git", "clone", "--quiet", s.remote, other)
	require.NoError(t, os.WriteFile(filepath.Join(other, "theirs.txt"), []byte("theirs\n"), 0o644))
	s.gitIn(t, other, "add", "-A")
	s.gitIn(t, other, "commit", "--quiet", "-m", "theirs")
	s.gitIn(t, other, "push", "--quiet", "origin", "HEAD:main")
	theirs := s.head(t, s.remote, "main")
	return theirs
}
