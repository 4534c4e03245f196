package gitstep

import (
	"context"
	"fmt"
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
// pushes them. With AutoCommit everything is staged first (`git add -A`),
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
	run := func(what string, argv []string, stdin []byte) ([]byte, []byte, error) {
		stdout, stderr, code, err := r.Run(ctx, argv, stdin)
		if err != nil {
			return stdout, stderr, fmt.Errorf("%s: %w", what, err)
		}
		if code != 0 {
			return stdout, stderr, fmt.Errorf("%s: %w", what, &CommandError{Argv: argv, ExitCode: code, Stderr: condense(string(stderr))})
		}
		return stdout, stderr, nil
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
	_, stderr, code, err := r.Run(ctx, argv, nil)
	if err != nil {
		return res, fmt.Errorf("pushing: %w", err)
	}
	if code != 0 {
		return res, ClassifyPush(opts.Remote, opts.Branch, stderr)
	}
	res.Pushed = true
	return res, nil
}
