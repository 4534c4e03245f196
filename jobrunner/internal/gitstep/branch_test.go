package gitstep

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckReviewBranch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		branch string
		want   string // "" means valid; else a part of the error
	}{
		{"review/b-1", ""},
		{"feature/add-login", ""},
		{"kiln-review", ""},
		{"", "branch: required"},
		{"-delete", "must not start with '-'"},
		{"kiln/b-1", "must not start with kiln/"},
		{"main", "must not be the project's branch"},
		{"a..b", "is not a valid git branch name"},
		{"with space", "must not contain spaces"},
		{"refs/heads/x", "no refs/ prefix"},
		{"x.lock", "is not a valid git branch name"},
		{"@{-1}", "is not a valid git branch name"},
		{"trailing/", "is not a valid git branch name"},
	} {
		t.Run(tc.branch, func(t *testing.T) {
			t.Parallel()
			err := CheckReviewBranch(tc.branch, "main")
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidBranch)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// git check-ref-format has the last word, beyond the rules checked before it.
func TestCheckBranchNameAsksGit(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	require.NoError(t, Step{}.CheckBranchName(ctx, s.runner, s.work, "review/b-1", "main"))
	for _, bad := range []string{"a..b", "kiln/b-1", "-x", "main", "x.lock"} {
		err := Step{}.CheckBranchName(ctx, s.runner, s.work, bad, "main")
		require.ErrorIs(t, err, ErrInvalidBranch, bad)
	}
	// A name the pure rules let through and git refuses: a component ending in ".lock".
	err := Step{}.CheckBranchName(ctx, s.runner, s.work, "a.lock/b", "main")
	require.ErrorIs(t, err, ErrInvalidBranch)
	require.ErrorContains(t, err, "git check-ref-format")
}

// workTree is everything git sees of the working tree and the index: the
// status (ignored files included) and the index's entries.
func (s *fixture) workTree(t *testing.T) (status, index string) {
	t.Helper()
	return s.status(t), string(s.git(t, "ls-files", "--stage"))
}

// A failed build's work goes to its branch through a temporary index: the
// branch checked out, the index and the working tree stay as they were.
func TestCommitBranchLeavesTheWorkspaceAlone(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	s.write(t, ".gitignore", "node_modules/\n")
	s.write(t, "gone.txt", "bye\n")
	s.git(t, "add", "-A")
	s.git(t, "commit", "--quiet", "-m", "more")
	s.git(t, "push", "--quiet", "origin", "main")
	s.prepare(t, "b-1")
	base := s.head(t, s.work, "HEAD")

	s.write(t, "README.md", "hello, edited\n")
	require.NoError(t, os.Remove(filepath.Join(s.work, "gone.txt")))
	s.write(t, "new/file.txt", "new\n")
	s.write(t, "staged.txt", "staged\n")
	s.git(t, "add", "staged.txt")
	s.write(t, "node_modules/dep.js", "dep\n")
	status, index := s.workTree(t)

	bc, err := Step{}.CommitBranch(ctx, s.runner, BranchOptions{Dir: s.work, BuildID: "b-1", Branch: "kiln/b-1",
		AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com", Subject: "Kiln: work kept from build b-1"})
	require.NoError(t, err)
	require.Equal(t, "kiln/b-1", bc.Branch)
	require.Equal(t, base, bc.Parent)
	require.Equal(t, []string{"README.md", "gone.txt", "new/file.txt", "staged.txt"}, bc.Files)
	require.Equal(t, bc.Commit, s.head(t, s.work, "refs/heads/kiln/b-1"))
	require.Equal(t, base, s.head(t, s.work, bc.Commit+"^"), "made on the commit the build started from")
	files := strings.Fields(string(s.git(t, "ls-tree", "-r", "--name-only", bc.Commit)))
	require.ElementsMatch(t, []string{".gitignore", "README.md", "new/file.txt", "staged.txt"}, files, "ignored files are not kept")
	require.Equal(t, "hello, edited\n", string(s.git(t, "show", bc.Commit+":README.md")))
	msg := string(s.git(t, "log", "-1", "--format=%an <%ae>%n%B", bc.Commit))
	require.Contains(t, msg, "Kiln Bot <kiln@example.com>\nKiln: work kept from build b-1\n")
	require.Contains(t, msg, "Kiln-Build-Id: b-1")

	require.Equal(t, base, s.head(t, s.work, "HEAD"), "HEAD stays")
	require.Equal(t, base, s.head(t, s.work, "refs/heads/main"), "the project branch stays")
	require.Equal(t, base, s.head(t, s.remote, "main"))
	gotStatus, gotIndex := s.workTree(t)
	require.Equal(t, status, gotStatus, "the working tree stays")
	require.Equal(t, index, gotIndex, "the index stays")
	require.Equal(t, "main", strings.TrimSpace(string(s.git(t, "branch", "--show-current"))))

	require.NoError(t, Step{}.PushBranch(ctx, s.runner, PushBranchOptions{Dir: s.work, Branch: "kiln/b-1", Commit: bc.Commit}))
	require.Equal(t, bc.Commit, s.head(t, s.remote, "refs/heads/kiln/b-1"))
	require.Equal(t, base, s.head(t, s.remote, "main"), "the remote project branch stays")

	// The next build finds that state already kept: reset, not kept again.
	ws := s.prepare(t, "b-2")
	require.Nil(t, ws.Leftovers)
	require.Equal(t, "refs/heads/kiln/b-1", ws.AlreadyKept)
	require.Equal(t, "!! node_modules/dep.js\n", s.status(t), "clean, ignored files kept in place")
	_, err = os.Stat(filepath.Join(s.work, "node_modules/dep.js"))
	require.NoError(t, err)
	require.Empty(t, s.gitAllowFail(t, "config", "--get", KeptConfigKey), "the record is gone with the state")
}

// A working tree that changed after its state was kept is kept on the
// leftovers ref as before.
func TestPrepareKeepsWhatChangedAfterCommitBranch(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	s.prepare(t, "b-1")
	s.write(t, "a.txt", "a\n")
	_, err := Step{}.CommitBranch(ctx, s.runner, BranchOptions{Dir: s.work, BuildID: "b-1", Branch: "kiln/b-1",
		AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com"})
	require.NoError(t, err)
	s.write(t, "b.txt", "b\n")
	ws := s.prepare(t, "b-2")
	require.Empty(t, ws.AlreadyKept)
	require.NotNil(t, ws.Leftovers)
	require.Equal(t, []string{"a.txt", "b.txt"}, ws.Leftovers.Files)

	// A kept branch deleted since is no safe place either.
	s.write(t, "c.txt", "c\n")
	_, err = Step{}.CommitBranch(ctx, s.runner, BranchOptions{Dir: s.work, BuildID: "b-2", Branch: "kiln/b-2",
		AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com"})
	require.NoError(t, err)
	s.git(t, "branch", "-D", "kiln/b-2")
	ws = s.prepare(t, "b-3")
	require.Empty(t, ws.AlreadyKept)
	require.NotNil(t, ws.Leftovers)
	require.Equal(t, []string{"c.txt"}, ws.Leftovers.Files)
}

func TestCommitBranchNothingToCommit(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.write(t, "ignored.log", "x\n")
	s.write(t, ".git/info/exclude", "*.log\n")
	bc, err := Step{}.CommitBranch(context.Background(), s.runner, BranchOptions{Dir: s.work, BuildID: "b-1",
		Branch: "kiln/b-1", AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com"})
	require.NoError(t, err)
	require.Empty(t, bc.Commit)
	require.Empty(t, bc.Files)
	require.Empty(t, s.gitAllowFail(t, "rev-parse", "--verify", "--quiet", "refs/heads/kiln/b-1"), "no branch made")
}

func TestCommitBranchRefusesTheBranchCheckedOut(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.write(t, "a.txt", "a\n")
	before := s.head(t, s.work, "main")
	_, err := Step{}.CommitBranch(context.Background(), s.runner, BranchOptions{Dir: s.work, BuildID: "b-1",
		Branch: "main", AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com"})
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, `branch "main": is checked out in the workspace`)
	require.Equal(t, before, s.head(t, s.work, "main"))
}

// A review branch: the build's commit is made from the project branch's
// head and pushed there; the project branch, local and remote, is untouched
// and the next build finds no leftovers.
func TestStepReviewBranch(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	s.prepare(t, "b-42")
	base := s.head(t, s.work, "HEAD")
	s.write(t, "index.html", "<h1>Review me</h1>\n")
	opts := s.opts()
	opts.ReviewBranch = "review/b-42"
	res, err := Step{}.Run(ctx, s.runner, opts)
	require.NoError(t, err)
	require.Equal(t, "review/b-42", res.Branch)
	require.True(t, res.Pushed)
	require.Equal(t, []string{"index.html"}, res.FilesChanged)
	require.Equal(t, res.CommitSHA, s.head(t, s.remote, "refs/heads/review/b-42"))
	require.Equal(t, base, s.head(t, s.work, res.CommitSHA+"^"), "created from the project branch's head")
	require.Equal(t, base, s.head(t, s.work, "main"))
	require.Equal(t, base, s.head(t, s.remote, "main"))
	require.Contains(t, string(s.git(t, "log", "-1", "--format=%B", res.CommitSHA)), "Kiln-Build-Id: b-42")

	ws := s.prepare(t, "b-43")
	require.Nil(t, ws.Leftovers, "the work is on the branch")
	require.Empty(t, s.status(t))
}

// The remote's review branch has commits this build does not: refused,
// never forced, and the error names the branch.
func TestStepReviewBranchRejected(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	other := filepath.Join(t.TempDir(), "other")
	s.run(t, s.work, "git", "clone", "--quiet", s.remote, other)
	require.NoError(t, os.WriteFile(filepath.Join(other, "theirs.txt"), []byte("theirs\n"), 0o644))
	s.gitIn(t, other, "add", "-A")
	s.gitIn(t, other, "commit", "--quiet", "-m", "theirs")
	s.gitIn(t, other, "push", "--quiet", "origin", "HEAD:refs/heads/review/x")
	theirs := s.head(t, s.remote, "refs/heads/review/x")

	s.write(t, "index.html", "<h1>Mine</h1>\n")
	opts := s.opts()
	opts.ReviewBranch = "review/x"
	res, err := Step{}.Run(ctx, s.runner, opts)
	var pe *PushError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, ErrNonFastForward)
	require.Equal(t, "review/x", pe.Branch)
	require.Contains(t, err.Error(), "branch review/x")
	require.NotEmpty(t, res.CommitSHA)
	require.False(t, res.Pushed)
	require.Equal(t, theirs, s.head(t, s.remote, "refs/heads/review/x"))
}

func TestStepRefusesABadReviewBranch(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.write(t, "index.html", "x\n")
	for _, b := range []string{"kiln/b-42", "main", "-f", "a..b"} {
		opts := s.opts()
		opts.ReviewBranch = b
		_, err := Step{}.Run(context.Background(), s.runner, opts)
		require.ErrorIs(t, err, ErrInvalidOptions, b)
		require.ErrorIs(t, err, ErrInvalidBranch, b)
	}
	require.Equal(t, "?? index.html\n", s.status(t), "nothing staged or committed")
}

// gitAllowFail runs git in the working tree and returns its trimmed stdout, whatever its exit code.
func (s *fixture) gitAllowFail(t *testing.T, args ...string) string {
	t.Helper()
	out, _, _, err := s.runner.Run(context.Background(), append([]string{"git", "-C", s.work}, args...), nil)
	if err != nil && !errors.Is(err, context.Canceled) {
		require.NoError(t, err)
	}
	return strings.TrimSpace(string(out))
}
