package run

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/kilnbuild/kiln/jobrunner/internal/gitstep"
	"github.com/kilnbuild/kiln/schema"
)

// prepareWorkspace brings the project's workspace to its branch head with a
// clean working tree before the agent starts (gitstep.Step.Prepare), and
// tells in events where it stands and what an earlier build left there.
func (r *Runner) prepareWorkspace(ctx context.Context, pod gitstep.Runner, buildID string, t schema.Target, creds *gitstep.Credentials) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.GitTimeout)
	defer cancel()
	ws, err := gitstep.Step{}.Prepare(ctx, pod, gitstep.PrepareOptions{
		Dir: t.Workdir, BuildID: buildID, Remote: t.GitRemote, Branch: t.GitBranch,
		AuthorName: t.AuthorName, AuthorEmail: t.AuthorEmail, Credentials: creds,
	})
	if err != nil {
		return err
	}
	if lo := ws.Leftovers; lo != nil {
		r.event(schema.LogPayload{Level: schema.LogWarn, Message: leftoversMessage(lo, cmp.Or(ws.Branch, t.GitBranch, "HEAD"))})
	}
	r.event(schema.LogPayload{Level: schema.LogInfo, Message: workspaceMessage(ws, t)})
	return nil
}

// workspaceMessage: "workspace clean at main 0123456789ab (fetched from origin)".
func workspaceMessage(ws gitstep.Workspace, t schema.Target) string {
	at := "with no commit yet"
	if ws.Head != "" {
		at = "at " + short(ws.Head)
	}
	msg := fmt.Sprintf("workspace clean on %s %s", cmp.Or(ws.Branch, "a detached HEAD"), at)
	switch {
	case ws.Fetched:
		msg += " (fetched from " + gitstep.Redact(t.GitRemote) + ")"
	case t.GitRemote != "":
		msg += " (" + gitstep.Redact(t.GitRemote) + " has no branch " + t.GitBranch + " yet)"
	}
	return msg
}

// leftoversMessage: "build b-1 left 2 uncommitted files (a.txt, b.txt) in the
// workspace: kept on refs/kiln/leftovers/b-1 (commit 0123456789ab), not part of this build".
func leftoversMessage(lo *gitstep.Leftovers, branch string) string {
	who := "an unknown build"
	if lo.Build != "" {
		who = "build " + lo.Build
	}
	var what []string
	if n := len(lo.Files); n > 0 {
		what = append(what, fmt.Sprintf("%d uncommitted %s (%s)", n, plural(n, "file", "files"), list(lo.Files, 10)))
	}
	if n := len(lo.Commits); n > 0 {
		what = append(what, fmt.Sprintf("%d %s not on %s", n, plural(n, "commit", "commits"), branch))
	}
	return fmt.Sprintf("%s left %s in the workspace: kept on %s (commit %s), not part of this build",
		who, strings.Join(what, " and "), lo.Ref, short(lo.Commit))
}

func short(sha string) string { return sha[:min(len(sha), 12)] }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// list joins the first max items, naming how many more there are.
func list(items []string, max int) string {
	if len(items) <= max {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:max], ", "), len(items)-max)
}
