package run

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kilnbuild/kiln/jobrunner/internal/events"
	"github.com/kilnbuild/kiln/jobrunner/internal/gitstep"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

func TestShouldKeep(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		res    schema.BuildResult
		pushed bool
		want   bool
	}{
		{"succeeded", schema.BuildResult{Success: true}, false, false},
		{"max turns", schema.BuildResult{Reason: schema.ReasonMaxTurns}, false, true},
		{"budget", schema.BuildResult{Reason: schema.ReasonBudgetExceeded}, false, true},
		{"deadline", schema.BuildResult{Reason: schema.ReasonDeadline}, false, true},
		{"agent error", schema.BuildResult{Reason: schema.ReasonAgentError}, false, true},
		{"exec broke", schema.BuildResult{Reason: schema.ReasonWorkspace}, false, true},
		{"cancelled", schema.BuildResult{Cancelled: true}, false, true},
		{"cancelled after the agent pushed", schema.BuildResult{Cancelled: true}, true, false},
		{"agent pushed", schema.BuildResult{Reason: schema.ReasonAgentPushed}, true, false},
		{"agent pushed, reason only", schema.BuildResult{Reason: schema.ReasonAgentPushed}, false, false},
		{"failed max turns, and pushed", schema.BuildResult{Reason: schema.ReasonMaxTurns}, true, false},
		{"git step failed", schema.BuildResult{Reason: schema.ReasonGit}, false, false},
		{"push rejected", schema.BuildResult{Reason: schema.ReasonPushRejected}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, shouldKeep(tc.res, tc.pushed))
		})
	}
}

// remoteFixture is a project with a bare remote (main: README.md and a
// .gitignore of node_modules/) and a runner whose pod is this machine.
type remoteFixture struct {
	dir, remote string
}

func setupRemote(t *testing.T) *remoteFixture {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	f := &remoteFixture{dir: t.TempDir()}
	f.remote = filepath.Join(f.dir, "remote.git")
	run := func(dir string, argv ...string) {
		t.Helper()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%q: %s", argv, out)
	}
	seed := filepath.Join(f.dir, "seed")
	run(f.dir, "git", "init", "-q", "--bare", "--initial-branch=main", f.remote)
	run(f.dir, "git", "clone", "-q", f.remote, seed)
	gitIn(t, seed, "checkout", "-q", "-b", "main")
	require.NoError(t, os.WriteFile(filepath.Join(seed, "README.md"), []byte("hello\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(seed, ".gitignore"), []byte("node_modules/\n"), 0o644))
	gitIn(t, seed, "add", "-A")
	gitIn(t, seed, "commit", "-q", "-m", "initial")
	gitIn(t, seed, "push", "-q", "origin", "main")
	return f
}

// clone makes a workspace cloned from the remote (without objects of its
// own: a new pod's).
func (f *remoteFixture) clone(t *testing.T, name string) string {
	t.Helper()
	work := filepath.Join(f.dir, name)
	cmd := exec.Command("git", "clone", "-q", "--no-local", "--single-branch", "--branch", "main", f.remote, work)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return work
}

func (f *remoteFixture) head(t *testing.T, rev string) string {
	t.Helper()
	cmd := exec.Command("git", "--git-dir", f.remote, "rev-parse", "--verify", "--quiet", rev)
	out, _ := cmd.Output()
	return strings.TrimSpace(string(out))
}

// runner returns a runner of build id in work whose agent runs script (a
// shell script that has read its prompt) in the workspace.
func (f *remoteFixture) runner(t *testing.T, work, id string, rc jobtemplates.RunnerConfig, spec schema.BuildSpec, script string) (*Runner, *memDispatcher) {
	t.Helper()
	fixtures, err := filepath.Abs("../agent/testdata/claude-code")
	require.NoError(t, err)
	bin := filepath.Join(f.dir, "claude-"+id)
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\ncat >/dev/null\nF="+fixtures+"\n"+script+"\n"), 0o755))
	kube := fake.NewSimpleClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "proj", Name: "ws"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	})
	d := &memDispatcher{task: schema.RunnerTask{BuildID: id, Status: schema.StatusRunning, Spec: spec,
		Target: schema.Target{Namespace: "proj", PodName: "ws", Workdir: work, GitRemote: "origin", GitBranch: "main",
			AuthorName: "Kiln Bot", AuthorEmail: "bot@kiln.example"}}}
	if rc.Agent.AllowedTools == nil {
		rc.Agent.AllowedTools = []string{"Read"}
	}
	cfg := Config{BuildID: id, Runner: rc, PIDDir: f.dir, AgentBinary: bin, KillWait: time.Second,
		StatusPoll: 100 * time.Millisecond, TerminationLog: filepath.Join(f.dir, "termination-log-"+id)}
	return New(cfg, d, kube, localExec{}, slog.New(slog.NewTextHandler(io.Discard, nil))), d
}

// editsThenMaxTurns changes, adds, stages and ignores files, then stops at its turn limit.
const editsThenMaxTurns = `echo edited > README.md
echo kept > kept.txt
echo staged > staged.txt && git add staged.txt
mkdir -p node_modules && echo dep > node_modules/dep.js
cat "$F/max-turns.jsonl"; exit 1`

func gitEvents(t *testing.T, d *memDispatcher) []schema.GitPayload {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []schema.GitPayload
	for _, e := range d.events {
		if e.Type != schema.EventGit {
			continue
		}
		p, err := e.Decode()
		require.NoError(t, err)
		out = append(out, p.(schema.GitPayload))
	}
	return out
}

// A build stopped at its turn limit keeps its changes on kiln/<id>, pushed
// with auto_push; the project branch, the index and ignored files stay.
func TestKeptWorkAfterAFailedAgent(t *testing.T) {
	t.Parallel()
	for _, push := range []bool{true, false} {
		name := map[bool]string{true: "auto_push", false: "no push"}[push]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := setupRemote(t)
			work := f.clone(t, "work")
			base := f.head(t, "main")
			id := testBuildID(t)
			r, d := f.runner(t, work, id, jobtemplates.RunnerConfig{},
				schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: push}, editsThenMaxTurns)
			out := r.Run(context.Background())
			res := out.Result
			require.True(t, out.Reported)
			require.False(t, res.Success)
			require.Equal(t, schema.ReasonMaxTurns, res.Reason, res.Error)
			require.Equal(t, schema.KeptWorkBranch(id), res.PartialBranch)
			require.NotEmpty(t, res.PartialCommitSHA)
			require.Empty(t, res.CommitSHA, "nothing committed to the project branch")
			require.Equal(t, []string{"README.md", "kept.txt", "staged.txt"}, res.FilesChanged)
			require.Equal(t, push, res.PartialPushed)

			require.Equal(t, res.PartialCommitSHA, gitIn(t, work, "rev-parse", "refs/heads/"+res.PartialBranch))
			require.Equal(t, base, gitIn(t, work, "rev-parse", res.PartialCommitSHA+"^"), "on the commit the build started from")
			require.Equal(t, "edited", gitIn(t, work, "show", res.PartialCommitSHA+":README.md"))
			require.NotContains(t, gitIn(t, work, "ls-tree", "-r", "--name-only", res.PartialCommitSHA), "node_modules")
			if push {
				require.Equal(t, res.PartialCommitSHA, f.head(t, "refs/heads/"+res.PartialBranch))
			} else {
				require.Empty(t, f.head(t, "refs/heads/"+res.PartialBranch), "not pushed without auto_push")
			}
			require.Equal(t, base, f.head(t, "main"), "the remote project branch is untouched")
			require.Equal(t, base, gitIn(t, work, "rev-parse", "main"))
			require.Equal(t, "main", gitIn(t, work, "branch", "--show-current"))
			require.Equal(t, "staged.txt", gitIn(t, work, "diff", "--cached", "--name-only"), "the index is as the agent left it")
			_, err := os.Stat(filepath.Join(work, "node_modules", "dep.js"))
			require.NoError(t, err, "ignored files stay")

			evs := gitEvents(t, d)
			require.Len(t, evs, 1, "one git event: %+v", evs)
			require.Equal(t, schema.GitPayload{FilesChanged: res.FilesChanged, Committed: true, CommitSHA: res.PartialCommitSHA,
				Pushed: push, Branch: res.PartialBranch, Kept: true}, evs[0])

			// The next build does not keep the same work a second time.
			r2, d2 := f.runner(t, work, id+"-next", jobtemplates.RunnerConfig{}, schema.BuildSpec{Prompt: "next"},
				`cat "$F/success-edit.jsonl"`)
			out = r2.Run(context.Background())
			require.True(t, out.Result.Success, out.Result.Error)
			for _, e := range d2.events {
				if l, ok := decodeLog(e); ok {
					require.NotContains(t, l.Message, "leftovers", "already kept: no leftovers")
				}
			}
			require.Empty(t, gitIn(t, work, "for-each-ref", "refs/kiln/"))
		})
	}
}

// Nothing is kept of a failed build that changed nothing, nor of one whose agent pushed.
func TestKeptWorkNone(t *testing.T) {
	t.Parallel()
	for name, script := range map[string]string{
		"no changes":   `cat "$F/max-turns.jsonl"; exit 1`,
		"agent pushed": "echo edited > README.md\ncat \"$F/agent-pushed.jsonl\"",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := setupRemote(t)
			work := f.clone(t, "work")
			id := testBuildID(t)
			r, d := f.runner(t, work, id, jobtemplates.RunnerConfig{},
				schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: true}, script)
			res := r.Run(context.Background()).Result
			require.False(t, res.Success)
			require.Empty(t, res.PartialBranch)
			require.Empty(t, res.PartialCommitSHA)
			require.Empty(t, gitIn(t, work, "branch", "--list", "kiln/*"))
			require.Empty(t, f.head(t, "refs/heads/"+schema.KeptWorkBranch(id)))
			for _, e := range gitEvents(t, d) {
				require.False(t, e.Kept)
			}
		})
	}
}

// A cancel (the dispatcher's, or SIGTERM when the Job is deleted) keeps
// what the agent had changed, and pushes it with auto_push.
func TestKeptWorkAfterACancel(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"dispatcher", "sigterm"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			f := setupRemote(t)
			work := f.clone(t, "work")
			id := testBuildID(t)
			r, d := f.runner(t, work, id, jobtemplates.RunnerConfig{GracePeriodSeconds: 30},
				schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: true},
				"echo half done > wip.txt\nhead -n 3 \"$F/success-edit.jsonl\"\nsleep 60")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				// Once the agent has written its file.
				for {
					if _, err := os.Stat(filepath.Join(work, "wip.txt")); err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if how == "sigterm" {
					cancel()
					return
				}
				d.mu.Lock()
				d.task.Status = schema.StatusCancelled
				d.mu.Unlock()
			}()
			out := r.Run(ctx)
			res := out.Result
			require.True(t, out.Reported)
			require.True(t, res.Cancelled, res.Error)
			require.Equal(t, []string{"wip.txt"}, res.FilesChanged)
			require.Equal(t, schema.KeptWorkBranch(id), res.PartialBranch)
			require.True(t, res.PartialPushed, res.Error)
			require.Equal(t, res.PartialCommitSHA, f.head(t, "refs/heads/"+res.PartialBranch))
			require.Equal(t, "half done", gitIn(t, work, "show", res.PartialCommitSHA+":wip.txt"))
		})
	}
}

// A review branch: created from the project branch's head, pushed; the
// project branch is untouched; {task_id} is the build's id.
func TestReviewBranch(t *testing.T) {
	t.Parallel()
	f := setupRemote(t)
	work := f.clone(t, "work")
	base := f.head(t, "main")
	id := testBuildID(t)
	r, d := f.runner(t, work, id, jobtemplates.RunnerConfig{},
		schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: true, Branch: "review/{task_id}"},
		"echo reviewed > README.md\ncat \"$F/success-edit.jsonl\"")
	res := r.Run(context.Background()).Result
	require.True(t, res.Success, res.Error)
	require.Equal(t, "review/"+id, res.Branch)
	require.Equal(t, res.CommitSHA, f.head(t, "refs/heads/review/"+id))
	require.Equal(t, base, gitIn(t, work, "rev-parse", res.CommitSHA+"^"))
	require.Equal(t, base, f.head(t, "main"), "the remote project branch is untouched")
	require.Equal(t, base, gitIn(t, work, "rev-parse", "main"))
	require.Empty(t, res.PartialBranch)
	evs := gitEvents(t, d)
	require.Len(t, evs, 1)
	require.Equal(t, "review/"+id, evs[0].Branch)
	require.True(t, evs[0].Pushed)
	require.False(t, evs[0].Kept)
}

// A review branch name git refuses fails the build before the agent runs.
func TestReviewBranchInvalid(t *testing.T) {
	t.Parallel()
	for _, b := range []string{"kiln/{task_id}", "-x", "a..b", "main"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			f := setupRemote(t)
			work := f.clone(t, "work")
			r, _ := f.runner(t, work, testBuildID(t), jobtemplates.RunnerConfig{},
				schema.BuildSpec{Prompt: "edit", AutoCommit: true, Branch: b}, "touch ran\ncat \"$F/success-edit.jsonl\"")
			res := r.Run(context.Background()).Result
			require.False(t, res.Success)
			require.Equal(t, schema.ReasonGit, res.Reason)
			require.Contains(t, res.Error, "invalid branch")
			_, err := os.Stat(filepath.Join(work, "ran"))
			require.ErrorIs(t, err, os.ErrNotExist, "the agent never ran")
		})
	}
}

// The remote's review branch has other commits: push_rejected naming it.
func TestReviewBranchRejected(t *testing.T) {
	t.Parallel()
	f := setupRemote(t)
	other := f.clone(t, "other")
	require.NoError(t, os.WriteFile(filepath.Join(other, "theirs.txt"), []byte("theirs\n"), 0o644))
	gitIn(t, other, "add", "-A")
	gitIn(t, other, "commit", "-q", "-m", "theirs")
	gitIn(t, other, "push", "-q", "origin", "HEAD:refs/heads/review/x")
	theirs := f.head(t, "refs/heads/review/x")

	work := f.clone(t, "work")
	r, _ := f.runner(t, work, testBuildID(t), jobtemplates.RunnerConfig{},
		schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: true, Branch: "review/x"},
		"echo mine > README.md\ncat \"$F/success-edit.jsonl\"")
	res := r.Run(context.Background()).Result
	require.False(t, res.Success)
	require.Equal(t, schema.ReasonPushRejected, res.Reason)
	require.Contains(t, res.Error, "branch review/x")
	require.Equal(t, theirs, f.head(t, "refs/heads/review/x"))
	require.Empty(t, res.PartialBranch, "a rejected push keeps its commit on the review branch, not on kiln/")
}

// A follow-up of a build with kept work starts from it: in the same
// workspace, in a new one (fetched from the remote), and fails naming the
// branch when the kept work is gone.
func TestFollowupStartsFromKeptWork(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"same workspace", "new workspace"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			f := setupRemote(t)
			work := f.clone(t, "work")
			parent := testBuildID(t)
			r, _ := f.runner(t, work, parent, jobtemplates.RunnerConfig{},
				schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: true}, editsThenMaxTurns)
			kept := r.Run(context.Background()).Result
			require.True(t, kept.PartialPushed, kept.Error)

			if where == "new workspace" {
				work = f.clone(t, "work2")
			}
			id := parent + "-f"
			// The agent sees the kept files and finishes the job.
			r, _ = f.runner(t, work, id, jobtemplates.RunnerConfig{},
				schema.BuildSpec{Prompt: "finish", AutoCommit: true, AutoPush: true},
				"cp kept.txt seen.txt\ncat \"$F/success-edit.jsonl\"")
			// The stand-in agent keeps no session: fallback fresh lets the follow-up run.
			r.disp.(*memDispatcher).task.Followup = &schema.FollowupTask{ParentID: parent, Fallback: schema.FallbackFresh,
				PartialBranch: kept.PartialBranch, PartialCommitSHA: kept.PartialCommitSHA}
			res := r.Run(context.Background()).Result
			require.True(t, res.Success, res.Error)
			require.Equal(t, []string{"README.md", "kept.txt", "seen.txt", "staged.txt"}, res.FilesChanged)
			require.Equal(t, res.CommitSHA, f.head(t, "main"), "the follow-up commits everything to the project branch")
			require.Equal(t, "kept", gitIn(t, work, "show", res.CommitSHA+":seen.txt"))
			require.Equal(t, "edited", gitIn(t, work, "show", res.CommitSHA+":README.md"))
		})
	}
	t.Run("gone", func(t *testing.T) {
		t.Parallel()
		f := setupRemote(t)
		work := f.clone(t, "work")
		r, d := f.runner(t, work, testBuildID(t), jobtemplates.RunnerConfig{},
			schema.BuildSpec{Prompt: "finish", AutoCommit: true}, "touch ran\ncat \"$F/success-edit.jsonl\"")
		d.task.Followup = &schema.FollowupTask{ParentID: "b-gone", Fallback: schema.FallbackFresh, PartialBranch: "kiln/b-gone",
			PartialCommitSHA: "0123456789abcdef0123456789abcdef01234567"}
		res := r.Run(context.Background()).Result
		require.False(t, res.Success)
		require.Equal(t, schema.ReasonWorkspace, res.Reason)
		require.Contains(t, res.Error, "kept work of build b-gone on kiln/b-gone")
		_, err := os.Stat(filepath.Join(work, "ran"))
		require.ErrorIs(t, err, os.ErrNotExist, "the agent never ran")
	})
}

// After a stop signal with too little of the grace period left for a push,
// the work is still committed to its branch, and the error says it was not pushed.
func TestKeptWorkSkipsThePushWithoutTime(t *testing.T) {
	t.Parallel()
	f := setupRemote(t)
	work := f.clone(t, "work")
	id := testBuildID(t)
	spec := schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: true}
	r, d := f.runner(t, work, id, jobtemplates.RunnerConfig{GracePeriodSeconds: 30}, spec, "")
	require.NoError(t, os.WriteFile(filepath.Join(work, "wip.txt"), []byte("wip\n"), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.batcher = events.Start(ctx, d, events.Options{})
	// 30s grace: git work must end 16s after the signal (2s margin, 10s
	// for the report, 2s for the events); 13.5s have gone.
	r.termAt = time.Now().Add(-13500 * time.Millisecond)
	left, ok := r.gitTimeLeft()
	require.True(t, ok)
	require.Less(t, left, minPushTime)

	res := schema.BuildResult{Cancelled: true, Error: "cancelled: " + errSignalled.Error()}
	r.keepWork(ctx, gitstep.LocalRunner{}, keepInput{buildID: id, target: d.task.Target, spec: spec}, &res)
	require.NoError(t, r.batcher.Close(context.Background()))
	require.Equal(t, schema.KeptWorkBranch(id), res.PartialBranch)
	require.NotEmpty(t, res.PartialCommitSHA)
	require.False(t, res.PartialPushed)
	require.Contains(t, res.Error, "but not pushed: no time left in the grace period")
	require.Equal(t, res.PartialCommitSHA, gitIn(t, work, "rev-parse", "refs/heads/"+res.PartialBranch))
	require.Empty(t, f.head(t, "refs/heads/"+res.PartialBranch))
	evs := gitEvents(t, d)
	require.Len(t, evs, 1)
	require.True(t, evs[0].Kept)
	require.False(t, evs[0].Pushed)
	require.Contains(t, evs[0].Error, "no time left")
}

// A keep that fails (here the branch cannot be made: kiln/<id>/x exists, so
// refs/heads/kiln/<id> cannot) is an event and a note in the error; the
// result is still reported with the build's own reason.
func TestKeptWorkFailureIsTold(t *testing.T) {
	t.Parallel()
	f := setupRemote(t)
	work := f.clone(t, "work")
	id := testBuildID(t)
	gitIn(t, work, "branch", schema.KeptWorkBranch(id)+"/x")
	r, d := f.runner(t, work, id, jobtemplates.RunnerConfig{},
		schema.BuildSpec{Prompt: "edit", AutoCommit: true, AutoPush: true}, editsThenMaxTurns)
	out := r.Run(context.Background())
	res := out.Result
	require.True(t, out.Reported)
	require.Equal(t, schema.ReasonMaxTurns, res.Reason)
	require.Contains(t, res.Error, "keeping the work on "+schema.KeptWorkBranch(id)+": ")
	require.Empty(t, res.PartialBranch)
	require.Equal(t, []string{"README.md", "kept.txt", "staged.txt"}, res.FilesChanged)
	evs := gitEvents(t, d)
	require.Len(t, evs, 1)
	require.False(t, evs[0].Kept)
	require.Contains(t, evs[0].Error, "keeping the work on")
}
