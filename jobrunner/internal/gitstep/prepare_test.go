package gitstep

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func (s *fixture) prepareOpts(id string) PrepareOptions {
	return PrepareOptions{Dir: s.work, BuildID: id, Remote: "origin", Branch: "main",
		AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com"}
}

func (s *fixture) prepare(t *testing.T, id string) Workspace {
	t.Helper()
	ws, err := Step{}.Prepare(context.Background(), s.runner, s.prepareOpts(id))
	require.NoError(t, err)
	return ws
}

// status is `git status --porcelain` of the working tree, ignored files included.
func (s *fixture) status(t *testing.T) string {
	t.Helper()
	return string(s.git(t, "status", "--porcelain", "--untracked-files=all", "--ignored"))
}

func (s *fixture) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.work, name))
	require.NoError(t, err)
	return string(b)
}

func (s *fixture) exists(name string) bool {
	_, err := os.Lstat(filepath.Join(s.work, name))
	return err == nil
}

// Everything a build can leave behind is kept on its ref, and the working
// tree is the branch's head again; ignored files stay where they are.
func TestPrepareKeepsLeftovers(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.write(t, ".gitignore", "node_modules/\n")
	s.write(t, "gone.txt", "to be deleted\n")
	s.git(t, "add", "-A")
	s.git(t, "commit", "--quiet", "-m", "ignore deps")
	s.git(t, "push", "--quiet", "origin", "main")
	base := s.head(t, s.work, "HEAD")

	ws := s.prepare(t, "b-1")
	require.Equal(t, Workspace{Head: base, Branch: "main", Fetched: true}, ws, "clean: nothing kept")
	require.Equal(t, "b-1", strings.TrimSpace(string(s.git(t, "config", "--get", BuildConfigKey))))

	// What build b-1 leaves: an edit, a deletion, new files (one staged, one
	// in a new folder), and an ignored dependency folder.
	s.write(t, "README.md", "hello, edited\n")
	require.NoError(t, os.Remove(filepath.Join(s.work, "gone.txt")))
	s.write(t, "scratch.txt", "notes\n")
	s.write(t, "new dir/ünï.md", "x\n")
	s.write(t, "staged.txt", "staged\n")
	s.git(t, "add", "staged.txt")
	s.write(t, "node_modules/dep/index.js", "module.exports = 1\n")

	ws = s.prepare(t, "b-2")
	require.NotNil(t, ws.Leftovers)
	lo := *ws.Leftovers
	require.Equal(t, "b-1", lo.Build)
	require.Equal(t, "refs/kiln/leftovers/b-1", lo.Ref)
	require.Equal(t, []string{"README.md", "gone.txt", "new dir/ünï.md", "scratch.txt", "staged.txt"}, lo.Files)
	require.Empty(t, lo.Commits)
	require.Equal(t, lo.Commit, s.head(t, s.work, lo.Ref))

	// The working tree is the branch head again; the ignored folder stays.
	require.Equal(t, base, s.head(t, s.work, "HEAD"))
	require.Equal(t, "main", strings.TrimSpace(string(s.git(t, "branch", "--show-current"))))
	require.Equal(t, "!! node_modules/dep/index.js\n", s.status(t))
	require.Equal(t, "hello\n", s.read(t, "README.md"))
	require.True(t, s.exists("gone.txt"))
	require.False(t, s.exists("scratch.txt"))
	require.False(t, s.exists("new dir"))
	require.Equal(t, "b-2", strings.TrimSpace(string(s.git(t, "config", "--get", BuildConfigKey))))
	require.Empty(t, s.git(t, "stash", "list"))

	// The ref holds the working tree as it was, on top of the commit it started from.
	require.Equal(t, base, s.head(t, s.work, lo.Ref+"^"))
	require.Equal(t, "hello, edited\n", string(s.git(t, "show", lo.Ref+":README.md")))
	require.Equal(t, "notes\n", string(s.git(t, "show", lo.Ref+":scratch.txt")))
	require.Equal(t, "x\n", string(s.git(t, "show", lo.Ref+":new dir/ünï.md")))
	files := string(s.git(t, "-c", "core.quotePath=false", "show", "--name-status", "--format=", lo.Ref))
	require.Equal(t, "M\tREADME.md\nD\tgone.txt\nA\tnew dir/ünï.md\nA\tscratch.txt\nA\tstaged.txt\n", files, "nothing ignored")
	msg := string(s.git(t, "log", "-1", "--format=%B", lo.Ref))
	require.Contains(t, msg, "Kiln-Leftovers-Of: b-1\nKiln-Kept-By: b-2\n")
	require.Equal(t, "Kiln Bot <kiln@example.com>", strings.TrimSpace(string(s.git(t, "log", "-1", "--format=%an <%ae>", lo.Ref))))
	_, err := os.Stat(filepath.Join(s.work, ".git", "kiln-leftovers.index"))
	require.ErrorIs(t, err, os.ErrNotExist, "the temporary index is removed")
	require.Equal(t, s.head(t, s.remote, "main"), base, "nothing pushed")
}

// The remote moved on and the workspace has a commit the remote refused
// (a rejected push): the workspace follows the remote, the commit is kept.
func TestPrepareFetchesAndKeepsUnpushedCommits(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.prepare(t, "b-1")
	s.write(t, "ours.txt", "ours\n")
	s.git(t, "add", "-A")
	s.git(t, "commit", "--quiet", "-m", "ours, never pushed")
	ours := s.head(t, s.work, "HEAD")

	theirs := s.pushFromElsewhere(t)

	ws := s.prepare(t, "b-2")
	require.Equal(t, theirs, ws.Head)
	require.True(t, ws.Fetched)
	require.Equal(t, theirs, s.head(t, s.work, "HEAD"))
	require.Equal(t, theirs, s.head(t, s.work, "refs/heads/main"))
	require.True(t, s.exists("theirs.txt"))
	require.False(t, s.exists("ours.txt"))
	require.NotNil(t, ws.Leftovers)
	require.Equal(t, []string{ours}, ws.Leftovers.Commits)
	require.Empty(t, ws.Leftovers.Files)
	require.Equal(t, ours, s.head(t, s.work, ws.Leftovers.Ref+"^"), "the unpushed commit is reachable from the ref")
	require.Equal(t, "ours\n", string(s.git(t, "show", ws.Leftovers.Ref+":ours.txt")))
}

// The agent switched branches and committed there: the workspace is back on
// the project's branch, and that commit is kept.
func TestPrepareReturnsToTheBranch(t *testing.T) {
	t.Parallel()
	s := setup(t)
	base := s.head(t, s.work, "HEAD")
	s.prepare(t, "b-1")
	s.git(t, "checkout", "--quiet", "-b", "feature")
	s.write(t, "f.txt", "f\n")
	s.git(t, "add", "-A")
	s.git(t, "commit", "--quiet", "-m", "on a side branch")
	side := s.head(t, s.work, "HEAD")
	s.write(t, "wip.txt", "wip\n")

	ws := s.prepare(t, "b-2")
	require.Equal(t, "main", ws.Branch)
	require.Equal(t, "main", strings.TrimSpace(string(s.git(t, "branch", "--show-current"))))
	require.Equal(t, base, s.head(t, s.work, "HEAD"))
	require.Equal(t, []string{side}, ws.Leftovers.Commits)
	require.Equal(t, []string{"wip.txt"}, ws.Leftovers.Files)
	require.Equal(t, side, s.head(t, s.work, ws.Leftovers.Ref+"^"))
	require.Equal(t, "wip\n", string(s.git(t, "show", ws.Leftovers.Ref+":wip.txt")))
	require.Empty(t, s.status(t))
}

// No build id recorded (a person edited the workspace, or the first build
// after an upgrade): the ref is named after the build that found them. The
// same ref written twice keeps its older commit as a parent.
func TestPrepareUnknownBuildAndSecondSave(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.write(t, "by-hand.txt", "1\n")
	ws := s.prepare(t, "b-2")
	require.Equal(t, "", ws.Leftovers.Build)
	require.Equal(t, "refs/kiln/leftovers/unknown-before-b-2", ws.Leftovers.Ref)
	require.NotContains(t, string(s.git(t, "log", "-1", "--format=%B", ws.Leftovers.Ref)), "Kiln-Leftovers-Of")
	first := ws.Leftovers.Commit

	s.git(t, "config", BuildConfigKey, "b-1")
	s.write(t, "again.txt", "2\n")
	ws = s.prepare(t, "b-3")
	second := ws.Leftovers.Commit
	s.git(t, "config", BuildConfigKey, "b-1")
	s.write(t, "third.txt", "3\n")
	ws = s.prepare(t, "b-4")
	require.Equal(t, "refs/kiln/leftovers/b-1", ws.Leftovers.Ref)
	parents := strings.Fields(string(s.git(t, "log", "-1", "--format=%P", ws.Leftovers.Ref)))
	require.Equal(t, []string{s.head(t, s.work, "HEAD"), second}, parents, "the older save stays reachable")
	require.NotEqual(t, first, second)

	// A recorded id that cannot name a ref is not trusted.
	s.git(t, "config", BuildConfigKey, "bad/../id")
	s.write(t, "x.txt", "x\n")
	ws = s.prepare(t, "b-5")
	require.Equal(t, "refs/kiln/leftovers/unknown-before-b-5", ws.Leftovers.Ref)
}

// Without a remote the local branch is the project's head; without a
// branch either, HEAD stays where it is and only the working tree is cleaned.
func TestPrepareWithoutRemote(t *testing.T) {
	t.Parallel()
	s := setup(t)
	base := s.head(t, s.work, "HEAD")
	s.write(t, "a.txt", "a\n")
	o := s.prepareOpts("b-1")
	o.Remote = ""
	ws, err := Step{}.Prepare(context.Background(), s.runner, o)
	require.NoError(t, err)
	require.False(t, ws.Fetched)
	require.Equal(t, base, ws.Head)
	require.Equal(t, []string{"a.txt"}, ws.Leftovers.Files)
	require.Empty(t, s.status(t))

	s.git(t, "checkout", "--quiet", "--detach")
	s.write(t, "b.txt", "b\n")
	o.Branch = ""
	ws, err = Step{}.Prepare(context.Background(), s.runner, o)
	require.NoError(t, err)
	require.Equal(t, Workspace{Head: base, Leftovers: ws.Leftovers}, ws)
	require.Empty(t, s.status(t))
	require.Empty(t, strings.TrimSpace(string(s.git(t, "branch", "--show-current"))), "still detached")
}

// A new project: the remote has no branch yet and the clone no commit. What
// is there is kept on a root commit; the first build's commit creates the branch.
func TestPrepareEmptyRepository(t *testing.T) {
	t.Parallel()
	s := setup(t)
	dir := t.TempDir()
	s.remote, s.work = filepath.Join(dir, "empty.git"), filepath.Join(dir, "work")
	s.run(t, dir, "git", "init", "--quiet", "--bare", "--initial-branch=main", s.remote)
	s.run(t, dir, "git", "clone", "--quiet", s.remote, s.work)

	ws := s.prepare(t, "b-1")
	require.Equal(t, Workspace{Branch: "main"}, ws)
	s.write(t, "left.txt", "left\n")
	ws = s.prepare(t, "b-2")
	require.Equal(t, "", ws.Head)
	require.Equal(t, "main", ws.Branch)
	require.Equal(t, []string{"left.txt"}, ws.Leftovers.Files)
	require.Empty(t, strings.TrimSpace(string(s.git(t, "log", "-1", "--format=%P", ws.Leftovers.Ref))), "a root commit")
	require.False(t, s.exists("left.txt"))

	s.write(t, "index.html", "<h1>new</h1>\n")
	o := s.opts()
	o.BuildID = "b-2"
	res, err := Step{}.Run(context.Background(), s.runner, o)
	require.NoError(t, err)
	require.True(t, res.Pushed)
	require.Equal(t, []string{"index.html"}, res.FilesChanged)
	require.Equal(t, res.CommitSHA, s.head(t, s.remote, "main"))
}

// The case that made this step necessary: a build without auto-commit
// leaves a file; the next build's commit holds only its own change.
func TestPrepareThenCommitHoldsOnlyOwnChanges(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.prepare(t, "b-1")
	s.write(t, "scratch.txt", "b-1 was here\n")
	o := s.opts()
	o.BuildID, o.AutoCommit = "b-1", false
	res, err := Step{}.Run(context.Background(), s.runner, o)
	require.NoError(t, err)
	require.Equal(t, []string{"scratch.txt"}, res.FilesChanged)

	ws := s.prepare(t, "b-2")
	require.Equal(t, []string{"scratch.txt"}, ws.Leftovers.Files)
	s.write(t, "README.md", "hello from b-2\n")
	o.BuildID, o.AutoCommit = "b-2", true
	res, err = Step{}.Run(context.Background(), s.runner, o)
	require.NoError(t, err)
	require.True(t, res.Pushed)
	require.Equal(t, []string{"README.md"}, res.FilesChanged)
	require.Equal(t, "README.md\n", string(s.run(t, s.remote, "git", "show", "--name-only", "--format=", "main")))
	require.Equal(t, "b-1 was here\n", string(s.git(t, "show", "refs/kiln/leftovers/b-1:scratch.txt")))
}

// An untracked repository inside the workspace is neither saved nor removed:
// the step says so instead of letting it into the build's commit.
func TestPrepareRefusesWhatItCannotClean(t *testing.T) {
	t.Parallel()
	s := setup(t)
	nested := filepath.Join(s.work, "vendor", "lib")
	require.NoError(t, os.MkdirAll(nested, 0o755))
	s.run(t, nested, "git", "init", "--quiet")
	require.NoError(t, os.WriteFile(filepath.Join(nested, "x"), []byte("x"), 0o644))
	s.gitIn(t, nested, "add", "x")
	s.gitIn(t, nested, "commit", "--quiet", "-m", "nested")
	_, err := Step{}.Prepare(context.Background(), s.runner, s.prepareOpts("b-1"))
	require.ErrorIs(t, err, ErrNotClean)
	require.ErrorContains(t, err, "vendor/lib")
}

func TestPrepareFailures(t *testing.T) {
	t.Parallel()
	s := setup(t)
	o := s.prepareOpts("b-1")
	o.Remote = "https://user:s3cret@127.0.0.1:1/nope.git"
	_, err := Step{}.Prepare(context.Background(), s.runner, o)
	require.ErrorContains(t, err, "fetching main from https://***@127.0.0.1:1/nope.git: git fetch: exit status 128")
	require.NotContains(t, err.Error(), "s3cret")

	for _, tt := range []struct {
		change func(*PrepareOptions)
		msg    string
	}{
		{func(o *PrepareOptions) { o.BuildID = "" }, "build id: required"},
		{func(o *PrepareOptions) { o.BuildID = "a/b" }, `build id: "a/b": must not contain '/'`},
		{func(o *PrepareOptions) { o.BuildID = "a..b" }, "must be usable in a git ref name"},
		{func(o *PrepareOptions) { o.Branch = "" }, "branch: required to fetch from a remote"},
		{func(o *PrepareOptions) { o.Remote = "--upload-pack=evil" }, "must not start with '-'"},
		{func(o *PrepareOptions) { o.AuthorName = "A <a@b>" }, "author name: must not"},
	} {
		o := s.prepareOpts("b-1")
		tt.change(&o)
		_, err := Step{}.Prepare(context.Background(), s.runner, o)
		require.ErrorIs(t, err, ErrInvalidOptions)
		require.ErrorContains(t, err, tt.msg)
	}
}
