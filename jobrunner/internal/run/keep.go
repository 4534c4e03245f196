package run

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kilnbuild/kiln/jobrunner/internal/agent"
	"github.com/kilnbuild/kiln/jobrunner/internal/gitstep"
	"github.com/kilnbuild/kiln/schema"
)

// minPushTime is the least time left in the grace period for which the
// kept work is still pushed after a stop signal.
const minPushTime = 3 * time.Second

// shouldKeep decides whether the changes of a build whose agent ran are
// committed to its kept-work branch (schema.KeptWorkBranch): when the build
// did not succeed, unless the agent pushed itself (nothing of such a build
// is committed) or the git step itself failed (its commit, if any, is on
// the workspace's branch and the next Prepare keeps it as leftovers).
func shouldKeep(res schema.BuildResult, agentPushed bool) bool {
	if res.Success || agentPushed {
		return false
	}
	switch res.Reason {
	case schema.ReasonAgentPushed, schema.ReasonGit, schema.ReasonPushRejected:
		return false
	}
	return true
}

// keepInput is what keepWork needs of the build.
type keepInput struct {
	buildID string
	target  schema.Target
	spec    schema.BuildSpec
	creds   *gitstep.Credentials
}

// keepWork commits what the agent changed to the build's kept-work branch
// (gitstep.Step.CommitBranch: on top of the commit the build started from,
// the project branch and the workspace's index untouched), pushes it when
// the build had auto_push, and records it in res (partial_branch,
// partial_commit_sha, partial_pushed, files_changed) and in one git event.
// After a stop signal it runs within what the grace period leaves before
// the events and the result are posted, and skips the push when too little
// is left. A failure to keep is told in the event and in res.Error.
func (r *Runner) keepWork(ctx context.Context, pod gitstep.Runner, in keepInput, res *schema.BuildResult) {
	gctx, cancel := r.gitContext(ctx)
	defer cancel()
	t := in.target
	branch := schema.KeptWorkBranch(in.buildID)
	why, _ := agent.Truncate(cmp.Or(res.Error, "the build did not succeed"), 500)
	bc, err := gitstep.Step{}.CommitBranch(gctx, pod, gitstep.BranchOptions{
		Dir: t.Workdir, BuildID: in.buildID, Branch: branch,
		AuthorName: cmp.Or(t.AuthorName, "Kiln"), AuthorEmail: cmp.Or(t.AuthorEmail, "kiln@localhost"),
		Subject: "Kiln: work kept from build " + in.buildID,
		Body:    joinLines(commitBody(in.spec.Prompt), "Kept because: "+firstLine(why)),
	})
	if bc.Files != nil {
		res.FilesChanged = bc.Files
	}
	if err != nil {
		msg := fmt.Sprintf("keeping the work on %s: %v", branch, err)
		r.log.Error("work not kept", "branch", branch, "err", err)
		r.event(schema.GitPayload{FilesChanged: nonNil(res.FilesChanged), Branch: branch, Error: msg})
		res.Error = joinMsg(res.Error, msg)
		return
	}
	if bc.Commit == "" {
		r.event(schema.GitPayload{FilesChanged: nonNil(res.FilesChanged)})
		return
	}
	res.PartialBranch, res.PartialCommitSHA = branch, bc.Commit
	var perr error
	if in.spec.AutoPush {
		if left, ok := r.gitTimeLeft(); ok && left < minPushTime {
			perr = fmt.Errorf("no time left in the grace period (%s)", left.Round(100*time.Millisecond))
		} else {
			perr = gitstep.Step{}.PushBranch(gctx, pod, gitstep.PushBranchOptions{Dir: t.Workdir,
				Remote: t.GitRemote, Branch: branch, Commit: bc.Commit, Credentials: in.creds})
		}
		res.PartialPushed = perr == nil
	}
	var perrMsg string
	if perr != nil {
		perrMsg = fmt.Sprintf("work kept on %s (commit %s) but not pushed: %v", branch, short(bc.Commit), perr)
		res.Error = joinMsg(res.Error, perrMsg)
	}
	r.event(schema.GitPayload{FilesChanged: res.FilesChanged, Committed: true, CommitSHA: bc.Commit,
		Pushed: res.PartialPushed, Branch: branch, Kept: true, Error: perrMsg})
	where := "in the workspace"
	if res.PartialPushed {
		where = "pushed to " + gitstep.Redact(cmp.Or(t.GitRemote, "origin"))
	}
	r.event(schema.LogPayload{Level: schema.LogInfo, Message: fmt.Sprintf("the build's changes (%d %s) are kept on %s at %s, %s; the project branch is untouched",
		len(res.FilesChanged), plural(len(res.FilesChanged), "file", "files"), branch, short(bc.Commit), where)})
}

// gitContext bounds git work done after the agent whatever the build's
// end: GitTimeout, and once a stop signal comes (now or later), the end of
// gitDeadline. It is not cancelled by ctx itself.
func (r *Runner) gitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.GitTimeout)
	var (
		mu    sync.Mutex
		timer *time.Timer
	)
	stop := context.AfterFunc(ctx, func() {
		r.markStopped()
		left, _ := r.gitTimeLeft()
		mu.Lock()
		defer mu.Unlock()
		timer = time.AfterFunc(left, cancel)
	})
	return gctx, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// gitTimeLeft is, after a stop signal, the time left for git work: the
// grace deadline less what the result post (graceForReport) and the events
// flush before it need. ok is false when no signal came.
func (r *Runner) gitTimeLeft() (time.Duration, bool) {
	dl, ok := r.graceDeadline()
	if !ok {
		return 0, false
	}
	flush := min(2*time.Second, r.graceForReport()/2)
	return max(time.Until(dl.Add(-r.graceForReport()-flush)), 0), true
}

// checkReviewBranch resolves the spec's review branch and has git check
// its name in the workspace; "" when the spec names none.
func (r *Runner) checkReviewBranch(ctx context.Context, pod gitstep.Runner, spec schema.BuildSpec, buildID string, t schema.Target) (string, error) {
	branch := spec.ReviewBranch(buildID)
	if branch == "" {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.GitTimeout)
	defer cancel()
	if err := (gitstep.Step{}).CheckBranchName(ctx, pod, t.Workdir, branch, t.GitBranch); err != nil {
		return "", err
	}
	return branch, nil
}

// applyKeptWork puts the kept work of the build a follow-up continues into
// the freshly prepared workspace as uncommitted changes
// (gitstep.Step.ApplyKept), fetching its branch from the remote when the
// workspace does not have the commit. Nothing to do without kept work.
func (r *Runner) applyKeptWork(ctx context.Context, pod gitstep.Runner, f *schema.FollowupTask, t schema.Target, creds *gitstep.Credentials) error {
	if f == nil || (f.PartialBranch == "" && f.PartialCommitSHA == "") {
		return nil
	}
	branch := cmp.Or(f.PartialBranch, schema.KeptWorkBranch(f.ParentID))
	ctx, cancel := context.WithTimeout(ctx, r.cfg.GitTimeout)
	defer cancel()
	a, err := gitstep.Step{}.ApplyKept(ctx, pod, gitstep.ApplyOptions{Dir: t.Workdir, Branch: branch,
		Commit: f.PartialCommitSHA, Remote: t.GitRemote, Credentials: creds})
	if err != nil {
		return fmt.Errorf("starting from the kept work of build %s on %s: %w", f.ParentID, branch, err)
	}
	from := "in the workspace"
	if a.Fetched {
		from = "fetched from " + gitstep.Redact(t.GitRemote)
	}
	r.event(schema.LogPayload{Level: schema.LogInfo, Message: fmt.Sprintf(
		"starting from the kept work of build %s: %s at %s (%s), %d %s changed (%s) as uncommitted changes",
		f.ParentID, branch, short(a.Commit), from, len(a.Files), plural(len(a.Files), "file", "files"), list(a.Files, 10))})
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func joinLines(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n\n" + b
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
