package run

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kilnbuild/kiln/jobrunner/internal/client"
	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// localExec runs requests as local processes: the pipeline without a cluster.
// Like the kubelet, it returns when the command exits, whether or not its
// stdin has ended, and closes the command's stdin when the caller's ends.
type localExec struct{}

func (localExec) Exec(ctx context.Context, _ podexec.Container, req podexec.Request) (int, error) {
	cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = req.Stdout, req.Stderr
	if req.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return -1, err
		}
		defer r.Close()
		cmd.Stdin = r
		go func() {
			_, _ = io.Copy(w, req.Stdin)
			w.Close()
		}()
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// memDispatcher is an in-memory dispatcher.
type memDispatcher struct {
	mu      sync.Mutex
	task    schema.RunnerTask
	events  []schema.EventInput
	results []schema.BuildResult
	// posting, when set, is closed at the first result post, which then
	// waits for its context (an unreachable dispatcher).
	posting chan struct{}
	// putErr, when set, decides the nth artifact upload's error.
	putErr func(n int) error
	puts   []string
}

func (d *memDispatcher) Task(context.Context) (schema.RunnerTask, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.task, nil
}

func (d *memDispatcher) PostEvents(_ context.Context, b schema.EventBatch) (schema.EventBatchAck, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, b.Events...)
	return schema.EventBatchAck{Stored: len(b.Events), Status: d.task.Status}, nil
}

func (d *memDispatcher) PutArtifact(_ context.Context, up schema.ArtifactUpload) (schema.Artifact, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.puts = append(d.puts, up.Path)
	if d.putErr != nil {
		if err := d.putErr(len(d.puts)); err != nil {
			return schema.Artifact{}, err
		}
	}
	return schema.Artifact{Path: up.Path, URL: schema.ArtifactURL(d.task.BuildID, up.Path)}, nil
}

func (d *memDispatcher) PostResult(ctx context.Context, r schema.BuildResult) (schema.ResultAck, error) {
	if d.posting != nil {
		close(d.posting)
		<-ctx.Done()
		return schema.ResultAck{}, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.results = append(d.results, r)
	return schema.ResultAck{Status: schema.StatusCompleted, Accepted: true}, nil
}

// setupLocal returns a runner whose "pod" is this machine: the agent is a
// shell script printing a fixture, then sleeping $AGENT_SLEEP seconds.
func setupLocal(t *testing.T, rc jobtemplates.RunnerConfig, sleep string) (*Runner, *memDispatcher, string) {
	t.Helper()
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	require.NoError(t, os.MkdirAll(work, 0o755))
	git := exec.Command("git", "init", "-q", work)
	require.NoError(t, git.Run())
	fixture, err := filepath.Abs("../agent/testdata/claude-code/success-edit.jsonl")
	require.NoError(t, err)
	if _, err := os.Stat(fixture); err != nil {
		t.Skip("fixtures not found:", err)
	}
	agentBin := filepath.Join(dir, "claude")
	require.NoError(t, os.WriteFile(agentBin, []byte("#!/bin/sh\ncat >/dev/null\nhead -n 3 "+fixture+"\nsleep "+sleep+"\ntail -n 1 "+fixture+"\n"), 0o755))
	kube := fake.NewSimpleClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "proj", Name: "ws"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	})
	id := testBuildID(t)
	d := &memDispatcher{task: schema.RunnerTask{BuildID: id, Status: schema.StatusRunning,
		Spec:   schema.BuildSpec{Prompt: "do it"},
		Target: schema.Target{Namespace: "proj", PodName: "ws", Workdir: work}}}
	if rc.Agent.AllowedTools == nil {
		rc.Agent.AllowedTools = []string{"Read"}
	}
	cfg := Config{BuildID: id, Runner: rc, PIDDir: dir, AgentBinary: agentBin, KillWait: time.Second,
		StatusPoll: 100 * time.Millisecond, TerminationLog: filepath.Join(dir, "termination-log")}
	return New(cfg, d, kube, localExec{}, slog.New(slog.NewTextHandler(io.Discard, nil))), d, dir
}

func TestLocalSuccessWithoutChanges(t *testing.T) {
	t.Parallel()
	r, d, _ := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	out := r.Run(context.Background())
	require.True(t, out.Reported)
	require.True(t, out.Result.Success, out.Result.Error)
	require.Equal(t, `Updated the heading in index.html to "Welcome to Acme".`, out.Result.Output)
	require.Equal(t, []string{}, out.Result.FilesChanged, "nothing changed: success without a commit")
	require.Empty(t, out.Result.CommitSHA)
	require.Len(t, d.results, 1)
}

// The runner's own deadline: the Job's deadline less the grace period and
// a margin. Reaching it kills the agent and fails the build.
func TestLocalAgentTimeout(t *testing.T) {
	t.Parallel()
	r, d, dir := setupLocal(t, jobtemplates.RunnerConfig{DeadlineSeconds: 12, GracePeriodSeconds: 1}, "60")
	start := time.Now()
	out := r.Run(context.Background())
	require.Less(t, time.Since(start), 10*time.Second)
	require.False(t, out.Result.Success)
	require.False(t, out.Result.Cancelled)
	require.Contains(t, out.Result.Error, "agent timed out after 1s (the build's deadline is 12s)")
	require.Empty(t, out.Result.CommitSHA)
	_, err := os.Stat(PIDFile(dir, r.cfg.BuildID))
	require.ErrorIs(t, err, os.ErrNotExist, "the agent was killed and its pid file removed")
	require.Len(t, d.results, 1)
}

// SIGTERM (ctx ending) stops the agent, skips git and reports cancelled.
func TestLocalSignal(t *testing.T) {
	t.Parallel()
	r, d, _ := setupLocal(t, jobtemplates.RunnerConfig{GracePeriodSeconds: 10}, "60")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	out := r.Run(ctx)
	require.Less(t, time.Since(start), 8*time.Second)
	require.True(t, out.Reported)
	require.True(t, out.Result.Cancelled)
	require.False(t, out.Result.Success)
	require.Contains(t, out.Result.Error, "SIGTERM")
	require.Len(t, d.results, 1)
}

// A build the dispatcher already finished is not run.
func TestLocalAlreadyTerminal(t *testing.T) {
	t.Parallel()
	r, d, dir := setupLocal(t, jobtemplates.RunnerConfig{}, "0")
	d.task.Status = schema.StatusCancelled
	out := r.Run(context.Background())
	require.True(t, out.Result.Cancelled)
	require.Equal(t, "build is already cancelled; nothing run", out.Result.Error)
	_, err := os.Stat(PIDFile(dir, r.cfg.BuildID))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// The dispatcher cancels while the agent is quiet: the status poll notices.
func TestLocalDispatcherCancel(t *testing.T) {
	t.Parallel()
	r, d, _ := setupLocal(t, jobtemplates.RunnerConfig{}, "60")
	time.AfterFunc(500*time.Millisecond, func() {
		d.mu.Lock()
		d.task.Status = schema.StatusCancelled
		d.mu.Unlock()
	})
	out := r.Run(context.Background())
	require.True(t, out.Result.Cancelled)
	require.Contains(t, out.Result.Error, "the dispatcher reports the build as terminal (cancelled)")
}

// A template whose adapter is none runs no agent: the workspace is still
// prepared and the git step still runs, and the result and the events say
// that no agent ran.
func TestLocalAdapterNone(t *testing.T) {
	t.Parallel()
	r, d, dir := setupLocal(t, jobtemplates.RunnerConfig{Template: "bench", Agent: jobtemplates.Agent{Adapter: jobtemplates.AdapterNone}}, "0")
	ran := filepath.Join(dir, "agent-ran")
	require.NoError(t, os.WriteFile(r.cfg.AgentBinary, []byte("#!/bin/sh\ntouch "+ran+"\n"), 0o755))
	d.task.Spec.AutoCommit = true
	d.task.Target.AuthorName, d.task.Target.AuthorEmail = "Kiln Bot", "bot@kiln.example"
	out := r.Run(context.Background())
	require.True(t, out.Reported)
	require.True(t, out.Result.Success, out.Result.Error)
	require.Equal(t, AgentSkipped, out.Result.Output, "no agent text, only the note")
	require.Nil(t, out.Result.Usage, "no agent reported usage")
	require.Empty(t, out.Result.SessionID)
	require.Equal(t, []string{}, out.Result.FilesChanged)
	require.Empty(t, out.Result.CommitSHA)
	_, err := os.Stat(ran)
	require.ErrorIs(t, err, os.ErrNotExist, "the agent binary never ran")
	var skipped, git int
	for _, e := range d.events {
		if l, ok := decodeLog(e); ok && l.Message == AgentSkipped && l.Level == schema.LogWarn {
			skipped++
		}
		if p, err := e.Decode(); err == nil {
			if _, ok := p.(schema.GitPayload); ok {
				git++
			}
		}
	}
	require.Equal(t, 1, skipped, "one event says the agent was skipped")
	require.Equal(t, 1, git, "the git step ran")
}

func TestLocalUnknownAdapter(t *testing.T) {
	t.Parallel()
	r, _, _ := setupLocal(t, jobtemplates.RunnerConfig{Agent: jobtemplates.Agent{Adapter: "codex"}}, "0")
	out := r.Run(context.Background())
	require.False(t, out.Result.Success)
	require.Equal(t, `agent adapter "codex": not implemented by this runner`, out.Result.Error)
	require.True(t, strings.HasPrefix(string(EncodeSummary(out.Summary())), `{"kiln":1,"success":false`))
}

// A signal while the result post is being retried cuts it to the grace
// period, so the runner still writes its termination message in time.
func TestLocalSignalDuringReport(t *testing.T) {
	t.Parallel()
	r, d, _ := setupLocal(t, jobtemplates.RunnerConfig{GracePeriodSeconds: 3}, "0")
	d.posting = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-d.posting
		cancel()
	}()
	start := time.Now()
	out := r.Run(ctx)
	require.Less(t, time.Since(start), 5*time.Second, "bounded by the 3s grace period, not the 2m report timeout")
	require.False(t, out.Reported)
	require.True(t, out.Result.Success, "the build itself had finished")
	require.Contains(t, out.Summary().Error, "result not reported")
}

// An answer that refuses every later upload (the build's artifact cap, the
// build's end) stops the uploads: the rest are listed without URLs, one
// event says so, and the build still reports its result.
func TestLocalArtifactsStopAtAFinalAnswer(t *testing.T) {
	t.Parallel()
	for name, final := range map[string]error{
		"cap":      &client.HTTPError{Method: "POST", Path: "/a", StatusCode: 422, Type: schema.ProblemRunnerCap, Detail: "artifacts: the cap"},
		"conflict": &client.HTTPError{Method: "POST", Path: "/a", StatusCode: 409, Detail: "build is cancelled"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, d, _ := setupLocal(t, jobtemplates.RunnerConfig{Artifacts: jobtemplates.Artifacts{Globs: []string{"out/*.txt"}, MaxBytes: 1000}}, "0")
			work := d.task.Target.Workdir
			require.NoError(t, os.WriteFile(filepath.Join(work, ".gitignore"), []byte("out/\n"), 0o644))
			gitIn(t, work, "add", ".gitignore")
			gitIn(t, work, "commit", "-q", "-m", "ignore out/")
			require.NoError(t, os.MkdirAll(filepath.Join(work, "out"), 0o755))
			for _, f := range []string{"a.txt", "b.txt", "c.txt", "d.txt"} {
				require.NoError(t, os.WriteFile(filepath.Join(work, "out", f), []byte(f), 0o644))
			}
			d.putErr = func(n int) error {
				if n == 2 {
					return final
				}
				return nil
			}
			out := r.Run(context.Background())
			require.True(t, out.Reported)
			require.True(t, out.Result.Success, out.Result.Error)
			require.Len(t, d.puts, 2, "no upload after the final answer: %v", d.puts)
			require.Len(t, out.Result.Artifacts, 4)
			var urls int
			for _, a := range out.Result.Artifacts {
				if a.URL != "" {
					urls++
				}
			}
			require.Equal(t, 1, urls)
			var told int
			for _, e := range d.events {
				if l, ok := decodeLog(e); ok && strings.HasPrefix(l.Message, "artifacts not uploaded: ") && strings.Contains(l.Message, "; skipped out/") {
					told++
				}
			}
			require.Equal(t, 1, told, "one event says why")
		})
	}
}

func decodeLog(e schema.EventInput) (schema.LogPayload, bool) {
	p, err := e.Decode()
	if err != nil {
		return schema.LogPayload{}, false
	}
	l, ok := p.(schema.LogPayload)
	return l, ok
}

// gitIn runs git in dir, as a seed user.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=Seed", "-c", "user.email=seed@example.com"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %q: %s", args, out)
	return strings.TrimSpace(string(out))
}
