package harness

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Commit writes files (path relative to the workdir → content; a path
// ending in ".sh" is made executable), commits them as "Seed" and pushes
// them to the remote's main, so they are part of the project branch a build
// starts from.
func (p *Project) Commit(t testing.TB, msg string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(p.Workdir, name)
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		must(t, os.WriteFile(path, []byte(content), mode))
	}
	p.Git(t, p.Workdir, "add", "-A")
	p.Git(t, p.Workdir, "-c", "user.name=Seed", "-c", "user.email=seed@example.com", "commit", "-q", "-m", msg)
	p.Git(t, p.Workdir, "push", "-q", "origin", "HEAD:refs/heads/main")
	return p.Git(t, p.Workdir, "rev-parse", "HEAD")
}

// Procs returns the live processes (zombies excluded) whose environment
// holds the exact entry kv ("KEY=VALUE"), in pid order. kubebox's
// containers are processes of this host, so a process the project pod runs
// is one here; everything the agent starts inherits the pod's environment
// (and the runner's per-build marker), however it detaches itself.
func Procs(kv string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	want := []byte(kv)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !Alive(pid) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if slices.ContainsFunc(bytes.Split(env, []byte{0}), func(b []byte) bool { return bytes.Equal(b, want) }) {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// AgentProcs are the live processes of the project pod's agent runs: those
// whose environment points at the project's stand-in Messages API, less the
// pod's own main process (and anything else in before, the pids seen before
// the build started).
func (p *Project) AgentProcs(before []int) []int {
	var out []int
	for _, pid := range Procs("ANTHROPIC_BASE_URL=" + p.API.URL()) {
		if !slices.Contains(before, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// Cmdline returns a process's argv ("" entries dropped), nil when it is gone.
func Cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range strings.Split(string(b), "\x00") {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Alive reports whether pid is a live process (a zombie counts as gone).
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
