package gitstep

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// KeptConfigKey is the repository's git config key (in .git/config) naming
// the working tree state last committed to a branch without a checkout:
// "<tree> <ref>". Prepare finds a working tree whose state is that tree,
// while ref still exists, already kept, and resets it without keeping it a
// second time on a leftovers ref.
const KeptConfigKey = "kiln.kept"

// ReservedBranchPrefix starts the branches the runner keeps work on
// (kiln/<build id>): a review branch may not start with it.
const ReservedBranchPrefix = "kiln/"

// ErrInvalidBranch wraps every refusal of a review branch's name.
var ErrInvalidBranch = errors.New("invalid branch")

// CheckReviewBranch holds the name of a review branch (BuildSpec.Branch,
// resolved) to the rules git has for branch names (see also
// Step.CheckBranchName, which asks git itself), and refuses a name that
// starts with '-', one in ReservedBranchPrefix, and the project's branch.
func CheckReviewBranch(branch, projectBranch string) error {
	bad := func(rule string) error { return fmt.Errorf("%w: branch %q: %s", ErrInvalidBranch, branch, rule) }
	switch {
	case branch == "":
		return fmt.Errorf("%w: branch: required", ErrInvalidBranch)
	case strings.HasPrefix(branch, "-"):
		return bad("must not start with '-'")
	case strings.HasPrefix(branch, ReservedBranchPrefix):
		return bad("must not start with " + ReservedBranchPrefix + " (the runner keeps failed builds' work there)")
	case projectBranch != "" && branch == projectBranch:
		return bad("must not be the project's branch (a review branch leaves it untouched)")
	}
	if err := checkBranch(branch); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidBranch, err)
	}
	return nil
}

// CheckBranchName asks git whether branch is a valid branch name
// (`git check-ref-format --branch`), after CheckReviewBranch's own rules.
func (Step) CheckBranchName(ctx context.Context, r Runner, dir, branch, projectBranch string) error {
	if err := CheckReviewBranch(branch, projectBranch); err != nil {
		return err
	}
	c := commands{ctx: ctx, r: r, dir: dir}
	_, code, err := c.run("checking the branch name", c.git("check-ref-format", "--branch", branch), nil, 1, 128)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%w: branch %q: is not a valid git branch name (git check-ref-format --branch)", ErrInvalidBranch, branch)
	}
	return nil
}

// BranchOptions configure CommitBranch.
type BranchOptions struct {
	// Dir is the repository's working tree, passed to git as -C; empty means
	// the Runner's working directory.
	Dir string
	// BuildID names the build in the commit message and its trailer. Required.
	BuildID string
	// Branch is the branch to commit to: created, or moved, to point at the
	// new commit. Required; never the branch checked out.
	Branch string
	// AuthorName and AuthorEmail are the commit's author and committer. Required.
	AuthorName  string
	AuthorEmail string
	// Subject and Body are as in Options.
	Subject string
	Body    string
}

// BranchCommit is what CommitBranch did.
type BranchCommit struct {
	// Branch and Commit name the new commit; both empty when there was
	// nothing to commit.
	Branch string
	Commit string
	// Parent is the commit it was made on (HEAD); empty in a repository
	// without commits.
	Parent string
	// Files are the paths that differ from Parent, as FilesChanged lists them.
	Files []string
}

// CommitBranch commits the working tree as it is (tracked and untracked
// files, ignored ones aside) on top of HEAD and points refs/heads/<Branch>
// at the commit, without checking anything out: the working tree, the
// index, HEAD and the branch checked out are left as they are. It goes
// through a temporary index (`read-tree HEAD`, `add --all`, `write-tree`,
// `commit-tree -p HEAD`, `update-ref`), then records the state in
// KeptConfigKey so the next Prepare does not keep it again.
//
// A working tree without changes commits nothing and returns a zero
// BranchCommit with Files empty.
func (Step) CommitBranch(ctx context.Context, r Runner, o BranchOptions) (BranchCommit, error) {
	if err := o.validate(); err != nil {
		return BranchCommit{}, err
	}
	c := commands{ctx: ctx, r: r, dir: o.Dir}
	head, err := c.rev("reading HEAD", "HEAD")
	if err != nil {
		return BranchCommit{}, err
	}
	out, _, err := c.run("reading the branch checked out", c.git("symbolic-ref", "--quiet", "HEAD"), nil, 1)
	if err != nil {
		return BranchCommit{}, err
	}
	if strings.TrimSpace(string(out)) == "refs/heads/"+o.Branch {
		return BranchCommit{}, fmt.Errorf("%w: branch %q: is checked out in the workspace", ErrInvalidOptions, o.Branch)
	}
	what := "committing to " + o.Branch
	tree, files, err := c.snapshot(what, head, "kiln-branch.index", true)
	if err != nil {
		return BranchCommit{}, err
	}
	bc := BranchCommit{Parent: head, Files: files}
	if len(files) == 0 {
		return bc, nil
	}
	opts := Options{BuildID: o.BuildID, Subject: o.Subject, Body: o.Body}
	commit, err := c.commitTree(what, tree, []string{head}, o.AuthorName, o.AuthorEmail, CommitMessage(opts))
	if err != nil {
		return bc, err
	}
	ref := "refs/heads/" + o.Branch
	if _, _, err := c.run(what+" (update-ref)", c.git("update-ref", "-m", "kiln: build "+o.BuildID, ref, commit), nil); err != nil {
		return bc, err
	}
	bc.Branch, bc.Commit = o.Branch, commit
	if err := c.recordKept(tree, ref); err != nil {
		return bc, err
	}
	return bc, nil
}

func (o BranchOptions) validate() error {
	var errs []error
	if err := checkRefComponent(o.BuildID); err != nil {
		errs = append(errs, fmt.Errorf("build id: %w", err))
	}
	if err := checkBranch(o.Branch); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(o.AuthorName) == "" {
		errs = append(errs, errors.New("author name: required to commit"))
	} else if hasControl(o.AuthorName) || strings.ContainsAny(o.AuthorName, "<>") {
		errs = append(errs, errors.New("author name: must not contain control characters or '<' '>'"))
	}
	if !strings.Contains(o.AuthorEmail, "@") {
		errs = append(errs, errors.New("author email: must be an email address"))
	} else if hasControl(o.AuthorEmail) || strings.ContainsAny(o.AuthorEmail, "<> ") {
		errs = append(errs, errors.New("author email: must not contain spaces, control characters or '<' '>'"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	return nil
}

// PushBranchOptions configure PushBranch.
type PushBranchOptions struct {
	Dir string
	// Remote is a remote name or URL. Default "origin".
	Remote string
	// Branch is the remote branch to push to: refs/heads/<Branch>. Required.
	Branch string
	// Commit is what to push. Required.
	Commit string
	// Credentials, when set, are given to the push on its stdin.
	Credentials *Credentials
}

// PushBranch pushes Commit to the remote's refs/heads/<Branch>, never with
// force: a remote branch that is not an ancestor of Commit is a *PushError
// (ErrNonFastForward).
func (Step) PushBranch(ctx context.Context, r Runner, o PushBranchOptions) error {
	o.Remote = cmp.Or(o.Remote, "origin")
	errs := []error{checkRemote(o.Remote), checkBranch(o.Branch), o.Credentials.Validate()}
	if !isHex(o.Commit) {
		errs = append(errs, errors.New("commit: required, a commit id"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	argv := Options{Dir: o.Dir}.git("push", o.Remote, o.Commit+":refs/heads/"+o.Branch)
	argv, stdin, err := o.Credentials.Wrap(argv)
	if err != nil {
		return fmt.Errorf("pushing %s: %w", o.Branch, err)
	}
	_, stderr, code, err := r.Run(ctx, argv, stdin)
	if err != nil {
		return fmt.Errorf("pushing %s: %w", o.Branch, err)
	}
	if code != 0 {
		return ClassifyPush(o.Remote, o.Branch, o.Credentials.Scrub(stderr))
	}
	return nil
}

func isHex(s string) bool {
	if len(s) < 7 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// snapshot writes the working tree as it is (ignored files aside) as a
// tree object through a temporary index named name in the git directory,
// starting from head (an empty index when head is ""), and lists the paths
// that differ from head (when files is true; nil otherwise). The working
// tree, the index and every ref are left alone.
func (c commands) snapshot(what, head, name string, files bool) (tree string, paths []string, err error) {
	out, _, err := c.run("finding the git directory", c.git("rev-parse", "--absolute-git-dir"), nil)
	if err != nil {
		return "", nil, err
	}
	index := strings.TrimSpace(string(out)) + "/" + name
	withIndex := func(args ...string) []string {
		return append([]string{"env", "GIT_INDEX_FILE=" + index}, c.git(args...)...)
	}
	// A stale index of an interrupted run must not leak into this one.
	if _, _, err := c.run("removing a stale index", []string{"rm", "-f", index}, nil); err != nil {
		return "", nil, err
	}
	defer func() {
		if _, _, rerr := c.run("removing the temporary index", []string{"rm", "-f", index}, nil); rerr != nil && err == nil {
			err = rerr
		}
	}()
	start := []string{"read-tree", "--empty"}
	if head != "" {
		start = []string{"read-tree", head}
	}
	for _, s := range [][]string{start, {"add", "--all"}} {
		if _, _, err := c.run(what+" ("+s[0]+")", withIndex(s...), nil); err != nil {
			return "", nil, err
		}
	}
	out, _, err = c.run(what+" (write-tree)", withIndex("write-tree"), nil)
	if err != nil {
		return "", nil, err
	}
	tree = strings.TrimSpace(string(out))
	if !files {
		return tree, nil, nil
	}
	list := withIndex("ls-files", "-z")
	if head != "" {
		list = withIndex("diff", "--cached", "--no-renames", "--name-only", "-z", head)
	}
	out, _, err = c.run(what+" (listing changes)", list, nil)
	if err != nil {
		return "", nil, err
	}
	return tree, FilesChanged(pathsAsChanges(splitNUL(out))), nil
}

// commitTree makes a commit of tree with parents (empty ones skipped, each
// once), authored and committed by name <email>, with message msg; it
// returns the commit's id. No ref moves.
func (c commands) commitTree(what, tree string, parents []string, name, email, msg string) (string, error) {
	argv := c.git("-c", "user.name="+name, "-c", "user.email="+email, "commit-tree", tree)
	var seen []string
	for _, p := range parents {
		if p != "" && !slices.Contains(seen, p) {
			seen = append(seen, p)
			argv = append(argv, "-p", p)
		}
	}
	argv = append(argv, "-F", "-")
	out, _, err := c.run(what+" (commit-tree)", argv, []byte(msg))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func pathsAsChanges(paths []string) []Change {
	changes := make([]Change, len(paths))
	for i, p := range paths {
		changes[i] = Change{Path: p}
	}
	return changes
}

// recordKept writes KeptConfigKey: the working tree's state tree is safe on ref.
func (c commands) recordKept(tree, ref string) error {
	_, _, err := c.run("recording the kept state", c.git("config", "--local", KeptConfigKey, tree+" "+ref), nil)
	return err
}

// alreadyKept reports whether the working tree's state (tree, from
// snapshot) is the one KeptConfigKey (value kept) records, and the ref that
// holds it still exists; it returns that ref.
func (c commands) alreadyKept(kept, tree string) (string, error) {
	keptTree, ref, ok := strings.Cut(strings.TrimSpace(kept), " ")
	if !ok || keptTree != tree || !strings.HasPrefix(ref, "refs/") {
		return "", nil
	}
	at, err := c.rev("reading "+ref, ref)
	if err != nil || at == "" {
		return "", err
	}
	return ref, nil
}
