package gitstep

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// LeftoversRefPrefix is where Prepare keeps what a build left in the
// workspace: refs/kiln/leftovers/<build id>.
const LeftoversRefPrefix = "refs/kiln/leftovers/"

// BuildConfigKey is the repository's git config key (in .git/config) naming
// the build that last started in the workspace.
const BuildConfigKey = "kiln.build"

// PrepareOptions configure Prepare. The remote, branch and author come from
// the project record.
type PrepareOptions struct {
	// Dir is the repository's working tree, passed to git as -C; empty means
	// the Runner's working directory.
	Dir string
	// BuildID is the build about to start. Required.
	BuildID string
	// Remote is a remote name or URL to fetch Branch from; empty means no
	// fetch: the local branch is the project's head.
	Remote string
	// Branch is the project's branch. Required with Remote. Empty (and no
	// Remote) keeps the commit checked out and only cleans the working tree.
	Branch string
	// AuthorName and AuthorEmail sign the leftovers commit. Default
	// "Kiln" <kiln@localhost>.
	AuthorName  string
	AuthorEmail string
	// Credentials, when set, are given to the fetch (and to no other
	// command) on its stdin; see Credentials.Wrap.
	Credentials *Credentials
}

// Workspace is the state Prepare left the workspace in.
type Workspace struct {
	// Head is the commit checked out; empty in a repository without commits.
	Head string
	// Branch is the branch checked out; empty when Prepare kept a detached HEAD.
	Branch string
	// Fetched reports that Head came from Remote.
	Fetched bool
	// Leftovers is what an earlier build left, now kept on a ref; nil when
	// the workspace was already clean.
	Leftovers *Leftovers
	// AlreadyKept is the ref that already held the working tree's state
	// (KeptConfigKey: an earlier build's kept work or review branch), so
	// Prepare reset it without keeping it again; empty otherwise.
	AlreadyKept string
}

// Leftovers describes what Prepare kept.
type Leftovers struct {
	// Build is the build that left them: the one that last started in the
	// workspace. Empty when the workspace names none.
	Build string
	// Ref is where they are kept: LeftoversRefPrefix + Build, or
	// LeftoversRefPrefix + "unknown-before-" + the new build's id.
	Ref string
	// Commit is the commit Ref points to. Its tree is the working tree as it
	// was (ignored files aside); its parents are the commits it started from
	// and any commits that were not on the project's branch.
	Commit string
	// Files are the uncommitted paths, as FilesChanged lists them.
	Files []string
	// Commits are the local commits that were not on the project's branch
	// (a push that was refused, say), kept as the commit's parents.
	Commits []string
}

// ErrNotClean: the working tree still has changes after Prepare reset it.
var ErrNotClean = errors.New("the workspace is not clean after the reset")

// Prepare brings the workspace to the project's branch head with a clean
// working tree before a build starts, and records the build's id in it:
//
//  1. read the id of the build that last started here (git config kiln.build);
//  2. fetch Branch from Remote when a Remote is set (a branch the remote
//     does not have yet falls back to the local branch, then to HEAD);
//  3. if the working tree has uncommitted or untracked files, or the local
//     HEAD or branch has commits that are not on the branch's head, commit
//     the working tree as it is — through a temporary index, so neither the
//     working tree nor the index nor any branch changes — and point
//     refs/kiln/leftovers/<that build> at it (an older commit on that ref
//     becomes a parent, so nothing is lost twice);
//  4. check out Branch at the head (`checkout --force -B`), or reset HEAD
//     there, and remove untracked files (`clean -d --force`);
//  5. check that the status is empty, and record BuildID.
//
// A working tree whose state an earlier build already committed to a branch
// (its kept work or review branch: KeptConfigKey, written by CommitBranch
// and ApplyKept) is reset in step 4 without being kept again in step 3;
// Workspace.AlreadyKept names that branch.
//
// Ignored files (dependency folders, caches, build outputs) are neither
// saved nor removed. Untracked nested repositories are left alone too, and
// then make the status check fail with ErrNotClean.
func (Step) Prepare(ctx context.Context, r Runner, o PrepareOptions) (Workspace, error) {
	if err := o.validate(); err != nil {
		return Workspace{}, err
	}
	c := commands{ctx: ctx, r: r, dir: o.Dir}
	g, run, rev := c.git, c.run, c.rev

	out, _, err := run("reading the last build's id", g("config", "--local", "--get", BuildConfigKey), nil, 1)
	if err != nil {
		return Workspace{}, err
	}
	prev := strings.TrimSpace(string(out))
	out, _, err = run("reading the kept state", g("config", "--local", "--get", KeptConfigKey), nil, 1)
	if err != nil {
		return Workspace{}, err
	}
	kept := strings.TrimSpace(string(out))
	head, err := rev("reading HEAD", "HEAD")
	if err != nil {
		return Workspace{}, err
	}

	var ws Workspace
	if o.Remote != "" {
		found, err := c.fetchBranch(o.Remote, o.Branch, o.Credentials)
		if err != nil {
			return Workspace{}, err
		}
		if found {
			if ws.Head, err = rev("reading the fetched head", "FETCH_HEAD"); err != nil {
				return Workspace{}, err
			}
			ws.Fetched = ws.Head != ""
		}
	}
	var local string
	if o.Branch != "" {
		if local, err = rev("reading the local branch", "refs/heads/"+o.Branch); err != nil {
			return Workspace{}, err
		}
	}
	ws.Head = cmp.Or(ws.Head, local, head)

	out, _, err = run("listing changes", g(StatusArgs...), nil)
	if err != nil {
		return Workspace{}, err
	}
	changes, err := ParseStatus(out)
	if err != nil {
		return Workspace{}, fmt.Errorf("listing changes: %w", err)
	}
	// Local commits the reset would take off every branch.
	var ahead []string
	for _, c := range []string{head, local} {
		if c == "" || c == ws.Head || slices.Contains(ahead, c) {
			continue
		}
		if ws.Head != "" {
			_, code, err := run("comparing with the branch head", g("merge-base", "--is-ancestor", c, ws.Head), nil, 1)
			if err != nil {
				return Workspace{}, err
			}
			if code == 0 {
				continue
			}
		}
		ahead = append(ahead, c)
	}

	var tree string // the working tree's state, once written
	if len(changes) > 0 && len(ahead) == 0 && kept != "" {
		// What the last build left may be safe on a branch already.
		if tree, _, err = c.snapshot("checking the kept state", head, "kiln-leftovers.index", false); err != nil {
			return Workspace{}, err
		}
		if ws.AlreadyKept, err = c.alreadyKept(kept, tree); err != nil {
			return Workspace{}, err
		}
		if ws.AlreadyKept != "" {
			changes = nil
		}
	}
	if len(changes) > 0 || len(ahead) > 0 {
		lo, err := o.keep(c, prev, head, tree, changes, ahead)
		if err != nil {
			return Workspace{}, err
		}
		ws.Leftovers = lo
	}

	if ws.Leftovers == nil && ws.AlreadyKept == "" && head == ws.Head {
		// Already clean and at the head: only the branch may need checking out.
		out, _, err := run("reading the branch", g("symbolic-ref", "--quiet", "HEAD"), nil, 1)
		if err != nil {
			return Workspace{}, err
		}
		if o.Branch == "" || strings.TrimSpace(string(out)) == "refs/heads/"+o.Branch {
			ws.Branch = o.Branch
			return ws, o.record(c, kept)
		}
	}
	switch {
	case ws.Head != "" && o.Branch != "":
		_, _, err = run("checking out "+o.Branch, g("checkout", "--quiet", "--force", "-B", o.Branch, ws.Head, "--"), nil)
		ws.Branch = o.Branch
	case ws.Head != "":
		_, _, err = run("resetting the working tree", g("reset", "--quiet", "--hard", ws.Head), nil)
	default: // no commit at all: empty the index, and stand on the branch to be
		_, _, err = run("emptying the index", g("read-tree", "--empty"), nil)
		if err == nil && o.Branch != "" {
			_, _, err = run("checking out "+o.Branch, g("symbolic-ref", "HEAD", "refs/heads/"+o.Branch), nil)
			ws.Branch = o.Branch
		}
	}
	if err != nil {
		return Workspace{}, err
	}
	if _, _, err := run("removing untracked files", g("clean", "--quiet", "-d", "--force"), nil); err != nil {
		return Workspace{}, err
	}
	out, _, err = run("listing changes", g(StatusArgs...), nil)
	if err != nil {
		return Workspace{}, err
	}
	if left, err := ParseStatus(out); err != nil || len(left) > 0 {
		if err != nil {
			return Workspace{}, fmt.Errorf("listing changes: %w", err)
		}
		return Workspace{}, fmt.Errorf("%w: %s", ErrNotClean, strings.Join(FilesChanged(left), ", "))
	}
	return ws, o.record(c, kept)
}

// record writes BuildID to the repository's configuration, and removes the
// kept state (KeptConfigKey) the last build recorded, when there is one.
func (o PrepareOptions) record(c commands, kept string) error {
	if kept != "" {
		if _, _, err := c.run("forgetting the kept state", c.git("config", "--local", "--unset-all", KeptConfigKey), nil, 5); err != nil {
			return err
		}
	}
	_, _, err := c.run("recording the build", c.git("config", "--local", BuildConfigKey, o.BuildID), nil)
	return err
}

// keep commits the working tree as it is (and the local commits in ahead)
// to the leftovers ref of build prev, without touching the working tree, the
// index or any branch. tree is the working tree's state when Prepare wrote
// it already; "" has keep write it.
func (o PrepareOptions) keep(c commands, prev, head, tree string, changes []Change, ahead []string) (*Leftovers, error) {
	g, run, rev := c.git, c.run, c.rev
	lo := &Leftovers{Build: prev, Files: FilesChanged(changes), Commits: ahead}
	if prev == "" || checkRefComponent(prev) != nil {
		lo.Build = ""
		lo.Ref = LeftoversRefPrefix + "unknown-before-" + o.BuildID
	} else {
		lo.Ref = LeftoversRefPrefix + prev
	}
	if tree == "" {
		var err error
		if tree, _, err = c.snapshot("saving the leftovers", head, "kiln-leftovers.index", false); err != nil {
			return nil, err
		}
	}
	old, err := rev("reading "+lo.Ref, lo.Ref)
	if err != nil {
		return nil, err
	}
	name, email := cmp.Or(o.AuthorName, "Kiln"), cmp.Or(o.AuthorEmail, "kiln@localhost")
	parents := append([]string{head}, append(ahead, old)...)
	if lo.Commit, err = c.commitTree("saving the leftovers", tree, parents, name, email, leftoversMessage(lo, o.BuildID)); err != nil {
		return nil, err
	}
	msg := "kiln: leftovers kept by build " + o.BuildID
	if _, _, err := run("saving the leftovers (update-ref)", g("update-ref", "-m", msg, lo.Ref, lo.Commit), nil); err != nil {
		return nil, err
	}
	return lo, nil
}

func leftoversMessage(lo *Leftovers, buildID string) string {
	var b strings.Builder
	who := "an unknown build"
	if lo.Build != "" {
		who = "build " + lo.Build
	}
	fmt.Fprintf(&b, "Kiln: what %s left in the workspace\n\n", who)
	fmt.Fprintf(&b, "Kept by build %s before it started from a clean workspace:\n", buildID)
	fmt.Fprintf(&b, "%d uncommitted file(s), %d local commit(s) not on the branch.\n\n", len(lo.Files), len(lo.Commits))
	if lo.Build != "" {
		fmt.Fprintf(&b, "Kiln-Leftovers-Of: %s\n", lo.Build)
	}
	fmt.Fprintf(&b, "Kiln-Kept-By: %s\n", buildID)
	return b.String()
}

func (o PrepareOptions) validate() error {
	var errs []error
	if err := checkRefComponent(o.BuildID); err != nil {
		errs = append(errs, fmt.Errorf("build id: %w", err))
	}
	if o.Remote != "" {
		if err := checkRemote(o.Remote); err != nil {
			errs = append(errs, err)
		}
		if o.Branch == "" {
			errs = append(errs, errors.New("branch: required to fetch from a remote"))
		}
		if err := o.Credentials.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Branch != "" {
		if err := checkBranch(o.Branch); err != nil {
			errs = append(errs, err)
		}
	}
	for field, v := range map[string]string{"author name": o.AuthorName, "author email": o.AuthorEmail} {
		if hasControl(v) || strings.ContainsAny(v, "<>") {
			errs = append(errs, fmt.Errorf("%s: must not contain control characters or '<' '>'", field))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	return nil
}

// checkRefComponent holds a build id to what one component of a ref name
// may be (it names refs/kiln/leftovers/<id>).
func checkRefComponent(id string) error {
	switch {
	case id == "":
		return errors.New("required")
	case strings.Contains(id, "/"):
		return fmt.Errorf("%q: must not contain '/'", id)
	}
	if err := checkBranch(id); err != nil {
		return fmt.Errorf("%q: must be usable in a git ref name", id)
	}
	return nil
}
