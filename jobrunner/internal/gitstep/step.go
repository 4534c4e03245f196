package gitstep

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Result is what the git step did.
type Result struct {
	// FilesChanged lists the paths the build changed (see FilesChanged).
	FilesChanged []string
	// Changes are the status entries behind FilesChanged.
	Changes []Change
	// CommitSHA is the commit the step made; empty when it made none.
	CommitSHA string
	// Branch is the review branch CommitSHA is on (Options.ReviewBranch);
	// empty when the step committed to the branch checked out.
	Branch string
	// Pushed reports that the remote branch now points at CommitSHA.
	Pushed bool
}

// Step runs the git step. The zero value is ready.
type Step struct{}

// CommandError is a git command that ran and failed.
type CommandError struct {
	Argv     []string
	ExitCode int
	// Stderr is git's message, condensed and redacted.
	Stderr string
}

func (e *CommandError) Error() string {
	name := "git"
	for _, a := range e.Argv[1:] {
		if !strings.HasPrefix(a, "-") && !strings.Contains(a, "=") && a != e.dir() {
			name += " " + a
			break
		}
	}
	return fmt.Sprintf("%s: exit status %d: %s", name, e.ExitCode, e.Stderr)
}

func (e *CommandError) dir() string {
	for i, a := range e.Argv {
		if a == "-C" && i+1 < len(e.Argv) {
			return e.Argv[i+1]
		}
	}
	return ""
}

// Run lists the changes in the working tree and, as opts ask, commits and
// pushes them. With a ReviewBranch the commit goes to that branch, made
// from HEAD without a checkout (see CommitBranch), and is pushed there; the
// branch checked out and its remote branch are not touched. With AutoCommit everything is staged first (`git add -A`),
// so renames are seen as renames; without it the index is left alone and a
// rename shows as its two paths (deleted and untracked).
//
// No changes: no commit, no push, no error. A rejected push returns the
// Result (the local commit is kept and CommitSHA names it) and a *PushError.
func (Step) Run(ctx context.Context, r Runner, opts Options) (Result, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return Result{}, err
	}
	run := commands{ctx: ctx, r: r, dir: opts.Dir}.run
	if opts.ReviewBranch != "" && opts.AutoCommit {
		return runOnBranch(ctx, r, opts)
	}

	if opts.AutoCommit {
		if _, _, err := run("staging changes", opts.git("add", "-A"), nil); err != nil {
			return Result{}, err
		}
	}
	out, _, err := run("listing changes", opts.git(StatusArgs...), nil)
	if err != nil {
		return Result{}, err
	}
	changes, err := ParseStatus(out)
	if err != nil {
		return Result{}, fmt.Errorf("listing changes: %w", err)
	}
	res := Result{Changes: changes, FilesChanged: FilesChanged(changes)}
	if len(changes) == 0 || !opts.AutoCommit {
		return res, nil
	}

	argv, msg, err := CommitCommand(opts)
	if err != nil {
		return res, err
	}
	if _, _, err := run("committing", argv, msg); err != nil {
		return res, err
	}
	sha, _, err := run("reading the commit", opts.git("rev-parse", "--verify", "HEAD"), nil)
	if err != nil {
		return res, err
	}
	res.CommitSHA = strings.TrimSpace(string(sha))
	if !opts.AutoPush {
		return res, nil
	}

	argv, err = PushCommand(opts)
	if err != nil {
		return res, err
	}
	argv, stdin, err := opts.Credentials.Wrap(argv)
	if err != nil {
		return res, fmt.Errorf("pushing: %w", err)
	}
	_, stderr, code, err := r.Run(ctx, argv, stdin)
	if err != nil {
		return res, fmt.Errorf("pushing: %w", err)
	}
	if code != 0 {
		return res, ClassifyPush(opts.Remote, opts.Branch, opts.Credentials.Scrub(stderr))
	}
	res.Pushed = true
	return res, nil
}

// runOnBranch commits the changes to opts.ReviewBranch, made from HEAD
// (CommitBranch: the branch checked out, its index and the working tree
// stay as they are), and pushes it there with AutoPush.
func runOnBranch(ctx context.Context, r Runner, opts Options) (Result, error) {
	bc, err := Step{}.CommitBranch(ctx, r, BranchOptions{Dir: opts.Dir, BuildID: opts.BuildID, Branch: opts.ReviewBranch,
		AuthorName: opts.AuthorName, AuthorEmail: opts.AuthorEmail, Subject: opts.Subject, Body: opts.Body})
	res := Result{FilesChanged: bc.Files, CommitSHA: bc.Commit}
	if res.FilesChanged == nil {
		res.FilesChanged = []string{}
	}
	if err != nil || bc.Commit == "" {
		return res, err
	}
	res.Branch = opts.ReviewBranch
	if !opts.AutoPush {
		return res, nil
	}
	if err := (Step{}).PushBranch(ctx, r, PushBranchOptions{Dir: opts.Dir, Remote: opts.Remote, Branch: opts.ReviewBranch,
		Commit: bc.Commit, Credentials: opts.Credentials}); err != nil {
		return res, err
	}
	res.Pushed = true
	return res, nil
}

// commands runs the steps' commands through a Runner in one repository.
type commands struct {
	ctx context.Context
	r   Runner
	dir string
}

// git returns argv for git in the repository.
func (c commands) git(args ...string) []string { return Options{Dir: c.dir}.git(args...) }

// run runs argv. A failure to run it is "what: err"; an exit code other
// than 0 and those in ok is "what: *CommandError".
func (c commands) run(what string, argv []string, stdin []byte, ok ...int) ([]byte, int, error) {
	stdout, stderr, code, err := c.r.Run(c.ctx, argv, stdin)
	if err != nil {
		return stdout, code, fmt.Errorf("%s: %w", what, err)
	}
	if code != 0 && !slices.Contains(ok, code) {
		return stdout, code, fmt.Errorf("%s: %w", what, &CommandError{Argv: argv, ExitCode: code, Stderr: condense(string(stderr))})
	}
	return stdout, code, nil
}

// fetchBranch fetches refs/heads/<branch> from remote into FETCH_HEAD, with
// creds (when set) given to the fetch on its stdin. A remote without that
// branch is no error: found is false.
func (c commands) fetchBranch(remote, branch string, creds *Credentials) (found bool, err error) {
	argv := c.git("fetch", "--quiet", "--no-tags", remote, "refs/heads/"+branch)
	wrapped, stdin, err := creds.Wrap(argv)
	if err != nil {
		return false, fmt.Errorf("fetching %s from %s: %w", branch, Redact(remote), err)
	}
	_, stderr, code, err := c.r.Run(c.ctx, wrapped, stdin)
	stderr = creds.Scrub(stderr)
	switch {
	case err != nil:
		return false, fmt.Errorf("fetching %s from %s: %w", branch, Redact(remote), err)
	case code == 0:
		return true, nil
	case strings.Contains(string(stderr), "couldn't find remote ref"):
		return false, nil
	}
	return false, fmt.Errorf("fetching %s from %s: %w", branch, Redact(remote),
		&CommandError{Argv: argv, ExitCode: code, Stderr: condense(string(stderr))})
}

// splitNUL splits git's -z output into its non-empty paths.
func splitNUL(out []byte) []string {
	paths := []string{}
	for _, p := range strings.Split(string(out), "\x00") {
		if p != "" {
			paths = append(paths, p)
		}
	}
	return paths
}

// rev resolves a revision to a commit id; "" when there is none.
func (c commands) rev(what, name string) (string, error) {
	out, code, err := c.run(what, c.git("rev-parse", "--verify", "--quiet", name+"^{commit}"), nil, 1)
	if err != nil || code != 0 {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}
