package run

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

// writeAgent replaces the stand-in agent of setupLocal with a shell script.
func writeAgent(t *testing.T, r *Runner, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(r.cfg.AgentBinary, []byte("#!/bin/sh\ncat >/dev/null\n"+body+"\n"), 0o755))
}

func logs(d *memDispatcher) []schema.LogPayload {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []schema.LogPayload
	for _, e := range d.events {
		if l, ok := decodeLog(e); ok {
			out = append(out, l)
		}
	}
	return out
}

func requireLog(t *testing.T, d *memDispatcher, level string, re string) schema.LogPayload {
	t.Helper()
	var msgs []string
	for _, l := range logs(d) {
		if l.Level == level && regexp.MustCompile(re).MatchString(l.Message) {
			return l
		}
		msgs = append(msgs, l.Level+": "+l.Message)
	}
	t.Fatalf("no %s event matching %q in:\n%s", level, re, strings.Join(msgs, "\n"))
	return schema.LogPayload{}
}

// seed gives the workspace of setupLocal a commit on main.
func seed(t *testing.T, work string) string {
	t.Helper()
	gitIn(t, work, "checkout", "-q", "-b", "main")
	require.NoError(t, os.WriteFile(filepath.Join(work, "README.md"), []byte("hello\n"), 0o644))
	gitIn(t, work, "add", "-A")
	gitIn(t, work, "commit", "-q", "-m", "seed")
	return gitIn(t, work, "rev-parse", "HEAD")
}

// What an earlier build left is kept on its ref and told in an event; the
// agent starts in a clean workspace and the build records its id there.
func TestLocalWorkspaceStartsClean(t *testing.T) {
	t.Parallel()
	r, d, _ := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	work := d.task.Target.Workdir
	head := seed(t, work)
	d.task.Target.GitBranch = "main"
	gitIn(t, work, "config", "kiln.build", "b-old")
	require.NoError(t, os.WriteFile(filepath.Join(work, "scratch.txt"), []byte("left by b-old\n"), 0o644))
	writeAgent(t, r, `ls > "$PWD/../seen"; cat `+fixturePath(t))

	out := r.Run(context.Background())
	require.True(t, out.Result.Success, out.Result.Error)
	require.Equal(t, []string{}, out.Result.FilesChanged)
	seen, err := os.ReadFile(filepath.Join(work, "..", "seen"))
	require.NoError(t, err)
	require.Equal(t, "README.md\n", string(seen), "the agent saw a clean workspace")
	require.Equal(t, "left by b-old\n", gitIn(t, work, "show", "refs/kiln/leftovers/b-old:scratch.txt")+"\n")
	require.Equal(t, r.cfg.BuildID, gitIn(t, work, "config", "kiln.build"))
	requireLog(t, d, schema.LogWarn, `^build b-old left 1 uncommitted file \(scratch.txt\) in the workspace: kept on refs/kiln/leftovers/b-old \(commit [0-9a-f]{12}\), not part of this build$`)
	requireLog(t, d, schema.LogInfo, `^workspace clean on main at `+head[:12]+`$`)
}

func TestLocalWorkspaceUnusable(t *testing.T) {
	t.Parallel()
	r, d, dir := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	seed(t, d.task.Target.Workdir)
	d.task.Target.GitRemote, d.task.Target.GitBranch = filepath.Join(dir, "no-such-remote.git"), "main"
	writeAgent(t, r, `touch "$PWD/../ran"`)
	out := r.Run(context.Background())
	require.False(t, out.Result.Success)
	require.Equal(t, schema.ReasonWorkspace, out.Result.Reason)
	require.Contains(t, out.Result.Error, "preparing the workspace: fetching main from "+d.task.Target.GitRemote+": git fetch: exit status 128")
	_, err := os.Stat(filepath.Join(dir, "ran"))
	require.ErrorIs(t, err, os.ErrNotExist, "the agent never ran")
}

// A cancel ends the agent and the tool process it started in a session of
// its own, which a process-group kill would leave running.
func TestLocalCancelEndsEveryProcess(t *testing.T) {
	t.Parallel()
	r, d, dir := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	writeAgent(t, r, `setsid sh -c 'echo $$ > `+dir+`/tool.pid; while :; do sleep 1; done' >/dev/null 2>&1 &
head -n 3 `+fixturePath(t)+`
sleep 60`)
	go func() {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "tool.pid")); err == nil {
				break
			}
		}
		d.mu.Lock()
		d.task.Status = schema.StatusCancelled
		d.mu.Unlock()
	}()
	out := r.Run(context.Background())
	require.True(t, out.Result.Cancelled, out.Result.Error)
	tool := waitPID(t, filepath.Join(dir, "tool.pid"))
	require.False(t, harness.Alive(tool), "the tool process %d outlived its build", tool)
	requireLog(t, d, schema.LogInfo, `^agent \(pid \d+\) stopped with SIGTERM(; \d+ process(es)? of the run killed with SIGKILL)?$`)
}

// An agent that exits leaving a server running: the server does not
// outlive the build, and an event says so.
func TestLocalNothingOutlivesTheAgent(t *testing.T) {
	t.Parallel()
	r, d, dir := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	writeAgent(t, r, `setsid sh -c 'echo $$ > `+dir+`/server.pid; while :; do sleep 1; done' >/dev/null 2>&1 &
while [ ! -s `+dir+`/server.pid ]; do sleep 0.05; done
cat `+fixturePath(t))
	out := r.Run(context.Background())
	require.True(t, out.Result.Success, out.Result.Error)
	server := waitPID(t, filepath.Join(dir, "server.pid"))
	require.False(t, harness.Alive(server))
	requireLog(t, d, schema.LogWarn, `^\d+ process\(es\) the agent left running killed$`)
}

// The first api_retry of an error no retry mends (401) stops the agent: the
// build fails at once, with the API's reason, and is not a cancel.
func TestLocalPermanentAPIErrorFailsFast(t *testing.T) {
	t.Parallel()
	r, _, _ := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	// The init line and the first api_retry of a recorded 401; then the CLI would retry for minutes.
	writeAgent(t, r, "head -n 2 "+fixture(t, "api-401")+"\nsleep 120")
	start := time.Now()
	out := r.Run(context.Background())
	took := time.Since(start)
	require.Less(t, took, 15*time.Second, "not the CLI's minutes of retries")
	t.Logf("failed in %s: %s", took.Round(time.Millisecond), out.Result.Error)
	require.False(t, out.Result.Success)
	require.False(t, out.Result.Cancelled)
	require.Equal(t, schema.ReasonAgentAuth, out.Result.Reason)
	require.Contains(t, out.Result.Error, "401")
	require.Empty(t, out.Result.CommitSHA)
}

// The agent pushed by itself: the build fails with agent_pushed, and the
// runner neither commits nor pushes its changes.
func TestLocalAgentPushed(t *testing.T) {
	t.Parallel()
	r, d, dir := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	work := d.task.Target.Workdir
	head := seed(t, work)
	remote := filepath.Join(dir, "remote.git")
	gitIn(t, dir, "init", "-q", "--bare", remote)
	gitIn(t, work, "push", "-q", remote, "HEAD:refs/heads/main")
	d.task.Target.GitRemote, d.task.Target.GitBranch = remote, "main"
	d.task.Target.AuthorName, d.task.Target.AuthorEmail = "Kiln Bot", "bot@kiln.example"
	d.task.Spec.AutoCommit, d.task.Spec.AutoPush = true, true
	writeAgent(t, r, "echo x > pushed.txt\ncat "+fixture(t, "agent-pushed"))

	out := r.Run(context.Background())
	require.False(t, out.Result.Success)
	require.Equal(t, schema.ReasonAgentPushed, out.Result.Reason)
	require.Contains(t, out.Result.Error, "only Kiln's git step may push")
	require.Contains(t, out.Result.Error, "the runner commits and pushes nothing")
	require.Empty(t, out.Result.CommitSHA)
	require.Equal(t, []string{"pushed.txt"}, out.Result.FilesChanged)
	require.Equal(t, head, gitIn(t, work, "rev-parse", "HEAD"), "nothing committed")
	require.Equal(t, head, gitIn(t, remote, "rev-parse", "main"), "nothing pushed by the runner")
	requireLog(t, d, schema.LogError, `^the runner commits and pushes nothing of a build whose agent pushed itself$`)
}

func fixturePath(t *testing.T) string { return fixture(t, "success-edit") }

// fixture is a transcript recorded from the pinned CLI (agent/testdata/claude-code).
func fixture(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs("../agent/testdata/claude-code/" + name + ".jsonl")
	require.NoError(t, err)
	require.FileExists(t, p)
	return p
}
