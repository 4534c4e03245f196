// Command record records transcripts of the pinned Claude Code CLI into the
// repository (`make record-fixtures`): for each scenario it runs the real CLI
// in a fresh temporary git repository against the stand-in Messages API
// (tests/messagesapi) with that scenario's script, and writes
//
//	<out>/<name>.jsonl  the CLI's stdout, one stream-json object a line
//	<out>/<name>.exit   its exit status, then its stderr (if any)
//
// Temporary paths, session and line UUIDs, timestamps and the server's port
// are replaced by stable placeholders (see normalize), so re-recording gives
// small diffs. Each scenario checks that the run did what it is meant to
// show, and the command fails when one did not.
//
//	record [-out DIR] [-only name,name]
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "folder to write into (default <repo>/jobrunner/internal/agent/testdata/claude-code)")
	only := flag.String("only", "", "comma-separated scenario names to record (default all)")
	flag.Parse()
	bin, err := messagesapi.ClaudeBinary()
	if err != nil {
		return err
	}
	if *out == "" {
		root, err := messagesapi.RepoRoot()
		if err != nil {
			return err
		}
		*out = filepath.Join(root, "jobrunner", "internal", "agent", "testdata", "claude-code")
	}
	var want []string
	if *only != "" {
		want = strings.Split(*only, ",")
		for _, n := range want {
			if !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.name == n }) {
				return fmt.Errorf("-only: no scenario %q", n)
			}
		}
	}
	var failed []string
	for _, sc := range scenarios {
		if want != nil && !slices.Contains(want, sc.name) {
			continue
		}
		start := time.Now()
		if err := record(bin, *out, sc); err != nil {
			fmt.Fprintf(os.Stderr, "record: %s: %v\n", sc.name, err)
			failed = append(failed, sc.name)
			continue
		}
		fmt.Fprintf(os.Stderr, "record: %s (%.1fs)\n", sc.name, time.Since(start).Seconds())
	}
	if failed != nil {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// recording is one finished run, before normalization.
type recording struct {
	stdout, stderr []byte
	status         string // "0", "1", …, or "signal: terminated"
	lines          []map[string]any
	dir            string // the repository the CLI ran in
	remote         string // its bare remote, when the scenario has one
	requests       []messagesapi.Request
}

func record(bin, out string, sc scenario) error {
	tmp, err := os.MkdirTemp("", "kiln-record-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if tmp, err = filepath.EvalSymlinks(tmp); err != nil {
		return err
	}
	rec := recording{dir: filepath.Join(tmp, "repo")}
	home := filepath.Join(tmp, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	if sc.remote {
		rec.remote = filepath.Join(tmp, "remote.git")
	}
	if err := setupRepo(rec.dir, rec.remote); err != nil {
		return fmt.Errorf("setting up the repository: %w", err)
	}

	srv := messagesapi.New()
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		return err
	}
	defer srv.Close()
	srv.Enqueue(absolutePaths(sc.script, rec.dir))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"-p", "--output-format", "stream-json", "--verbose", "--allowedTools"}
	args = append(args, sc.allowed...)
	args = append(args, "--disallowedTools")
	args = append(args, append(slices.Clone(sc.disallowed), "Bash(git commit:*)", "Bash(git push:*)")...)
	args = append(args, "--permission-mode", "default", "--max-turns", fmt.Sprint(sc.maxTurns))
	if sc.maxBudget > 0 {
		args = append(args, "--max-budget-usd", fmt.Sprint(sc.maxBudget))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = rec.dir
	cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8", "TZ=UTC"}, gitEnv...),
		messagesapi.CLIEnv(srv.URL(), home)...)
	cmd.Env = append(cmd.Env, sc.env...)
	cmd.Stdin = strings.NewReader(sc.prompt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the CLI: %w", err)
	}
	if sc.cancelWhenStalled {
		stop := make(chan struct{})
		defer close(stop)
		go terminateWhenStalled(srv, cmd.Process, stop)
	}
	var buf bytes.Buffer
	scan := bufio.NewScanner(stdout)
	scan.Buffer(nil, 64<<20)
	for scan.Scan() {
		buf.Write(scan.Bytes())
		buf.WriteByte('\n')
	}
	waitErr := cmd.Wait()
	if err := scan.Err(); err != nil {
		return fmt.Errorf("reading stdout: %w", err)
	}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		rec.status = "0"
	case errors.As(waitErr, &exitErr) && exitErr.ExitCode() >= 0:
		rec.status = fmt.Sprint(exitErr.ExitCode())
	case errors.As(waitErr, &exitErr):
		rec.status = exitErr.String()
	default:
		return fmt.Errorf("running the CLI: %w", waitErr)
	}
	rec.stdout, rec.stderr, rec.requests = buf.Bytes(), stderr.Bytes(), srv.Requests()
	if rec.lines, err = parseLines(rec.stdout); err != nil {
		return err
	}
	if err := sc.check(&rec); err != nil {
		return fmt.Errorf("the run does not show what it should: %w\nstdout:\n%s", err, truncate(rec.stdout, 4000))
	}

	n := newNormalizer(map[string]string{rec.dir: "/workspace", home: "/home/agent", tmp: "/tmp/record"},
		strings.TrimPrefix(srv.URL(), "http://"))
	if rec.remote != "" {
		n.paths = append([][2]string{{rec.remote, "/srv/git/site.git"}}, n.paths...)
	}
	exit := n.normalize(rec.status + "\n" + string(rec.stderr))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, sc.name+".jsonl"), []byte(n.normalize(string(rec.stdout))), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, sc.name+".exit"), []byte(exit), 0o644)
}

// absolutePaths returns s with each relative tool input file_path made
// absolute under dir, as the model writes them (the CLI takes both).
func absolutePaths(s messagesapi.Script, dir string) messagesapi.Script {
	turns := slices.Clone(s.Turns)
	for i, t := range turns {
		tools := slices.Clone(t.Tools)
		for j, tu := range tools {
			p, ok := tu.Input["file_path"].(string)
			if !ok || filepath.IsAbs(p) {
				continue
			}
			in := maps.Clone(tu.Input)
			in["file_path"] = filepath.Join(dir, p)
			tools[j].Input = in
		}
		turns[i].Tools = tools
	}
	s.Turns = turns
	return s
}

// terminateWhenStalled sends SIGTERM to p once the stand-in holds a stalled
// request (the CLI is waiting for the model), until stop is closed.
func terminateWhenStalled(srv *messagesapi.Server, p *os.Process, stop <-chan struct{}) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for _, q := range srv.Requests() {
			if q.Stalled && q.InFlight {
				// Let the CLI settle into waiting, then end it as Kiln's cancel does.
				time.Sleep(300 * time.Millisecond)
				_ = p.Signal(syscall.SIGTERM)
				return
			}
		}
	}
}

// gitEnv fixes git's identity and dates so commits (the repository's first
// and any the agent makes) have the same ids in every recording.
var gitEnv = []string{
	"GIT_AUTHOR_NAME=Kiln Recorder", "GIT_AUTHOR_EMAIL=recorder@kiln.invalid",
	"GIT_COMMITTER_NAME=Kiln Recorder", "GIT_COMMITTER_EMAIL=recorder@kiln.invalid",
	"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z",
	"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
}

// setupRepo makes dir a git repository on branch main holding a small site,
// with remote as its origin (a bare repository, pushed to) when not "".
func setupRepo(dir, remote string) error {
	files := map[string]string{
		"index.html": "<!doctype html>\n<title>Acme</title>\n<h1>Hello</h1>\n",
		"README.md":  "# Acme site\n\nThe landing page is index.html.\n",
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	steps := [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-qm", "Initial site"}}
	if remote != "" {
		if err := git("", "init", "-q", "--bare", "-b", "main", remote); err != nil {
			return err
		}
		steps = append(steps, []string{"remote", "add", "origin", remote}, []string{"push", "-q", "origin", "main"})
	}
	for _, s := range steps {
		if err := git(dir, s...); err != nil {
			return err
		}
	}
	return nil
}

func git(dir string, args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"}, gitEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append(b[:n:n], "…"...)
}
