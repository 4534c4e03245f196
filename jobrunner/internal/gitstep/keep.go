package gitstep

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
)

// Why kept work could not be applied, found with errors.Is.
var (
	ErrKeptWorkGone     = errors.New("the kept work is neither in the workspace nor on the remote")
	ErrKeptWorkConflict = errors.New("the kept work conflicts with the branch's head")
)

// ApplyOptions configure ApplyKept.
type ApplyOptions struct {
	// Dir is the repository's working tree, passed to git as -C.
	Dir string
	// Branch is the branch holding the kept work (kiln/<build id>). Required.
	Branch string
	// Commit is the kept commit; empty means Branch's head.
	Commit string
	// Remote is fetched refs/heads/<Branch> from when the commit is not in
	// the workspace; empty means no fetch.
	Remote string
	// Credentials, when set, are given to the fetch on its stdin.
	Credentials *Credentials
}

// Applied is what ApplyKept did.
type Applied struct {
	// Commit is the kept commit applied.
	Commit string
	// Fetched reports that it came from the remote.
	Fetched bool
	// Files are the paths the working tree now changes, as FilesChanged lists them.
	Files []string
}

// ApplyKept puts an earlier build's kept work (a commit on Branch, made on
// the commit that build started from) into a clean working tree as
// uncommitted changes on top of HEAD: the commit's tree when HEAD is its
// parent, else the three-way merge of HEAD and the commit on their merge
// base (`git merge-tree --write-tree`). The index and HEAD are left as they
// were; new files are untracked. The commit is looked up in the workspace,
// then fetched from Remote.
//
// A commit that cannot be found is ErrKeptWorkGone, one that conflicts with
// HEAD ErrKeptWorkConflict (naming the files); either way the working tree
// is not touched. Run it right after Prepare.
func (Step) ApplyKept(ctx context.Context, r Runner, o ApplyOptions) (Applied, error) {
	if err := checkBranch(o.Branch); err != nil {
		return Applied{}, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if o.Commit != "" && !isHex(o.Commit) {
		return Applied{}, fmt.Errorf("%w: commit %q: must be a commit id", ErrInvalidOptions, o.Commit)
	}
	c := commands{ctx: ctx, r: r, dir: o.Dir}
	want := o.Commit
	if want == "" {
		want = "refs/heads/" + o.Branch
	}
	var a Applied
	kept, err := c.rev("finding the kept work", want)
	if err != nil {
		return Applied{}, err
	}
	if kept == "" && o.Remote != "" {
		found, err := c.fetchBranch(o.Remote, o.Branch, o.Credentials)
		if err != nil {
			return Applied{}, err
		}
		if found {
			if o.Commit == "" {
				want = "FETCH_HEAD"
			}
			if kept, err = c.rev("finding the kept work", want); err != nil {
				return Applied{}, err
			}
			a.Fetched = kept != ""
		}
	}
	if kept == "" {
		return Applied{}, fmt.Errorf("%w: branch %s, commit %s", ErrKeptWorkGone, o.Branch, cmp.Or(o.Commit, "(its head)"))
	}
	a.Commit = kept
	if a.Fetched {
		if _, _, err := c.run("keeping the fetched work on "+o.Branch, c.git("update-ref", "refs/heads/"+o.Branch, kept), nil); err != nil {
			return Applied{}, err
		}
	}

	head, err := c.rev("reading HEAD", "HEAD")
	if err != nil {
		return Applied{}, err
	}
	if head == "" {
		return Applied{}, errors.New("applying the kept work: the workspace has no commit to apply it on")
	}
	parent, err := c.rev("reading the kept work's parent", kept+"^")
	if err != nil {
		return Applied{}, err
	}
	var tree string
	if parent == head {
		out, _, err := c.run("reading the kept work's tree", c.git("rev-parse", "--verify", kept+"^{tree}"), nil)
		if err != nil {
			return Applied{}, err
		}
		tree = strings.TrimSpace(string(out))
	} else {
		out, code, err := c.run("merging the kept work with the branch's head",
			c.git("merge-tree", "--write-tree", "--name-only", "--no-messages", head, kept), nil, 1)
		if err != nil {
			return Applied{}, err
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if code == 1 {
			return Applied{}, fmt.Errorf("%w: branch %s (commit %s) on %s: %s", ErrKeptWorkConflict, o.Branch,
				short(kept), short(head), strings.Join(lines[1:], ", "))
		}
		tree = strings.TrimSpace(lines[0])
	}
	out, _, err := c.run("listing the kept work's changes", c.git("diff", "--no-renames", "--name-only", "-z", head, tree), nil)
	if err != nil {
		return Applied{}, err
	}
	a.Files = FilesChanged(pathsAsChanges(splitNUL(out)))
	// Two-tree read-tree moves the (clean) working tree from HEAD's tree to
	// the kept one; the mixed reset puts the index back on HEAD.
	if _, _, err := c.run("applying the kept work", c.git("read-tree", "-u", "-m", "HEAD", tree), nil); err != nil {
		return Applied{}, err
	}
	if _, _, err := c.run("applying the kept work (index)", c.git("reset", "--quiet", "--mixed"), nil); err != nil {
		return Applied{}, err
	}
	// Until this build keeps or commits its own, the applied state is safe
	// on Branch: the next Prepare need not keep it again.
	if err := c.recordKept(tree, "refs/heads/"+o.Branch); err != nil {
		return a, err
	}
	return a, nil
}

func short(sha string) string { return sha[:min(len(sha), 12)] }
