package gitstep

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// keepWork is a build b-1 that edits README.md, deletes gone.txt, adds
// new.txt and has its work kept (and pushed) on kiln/b-1.
func (s *fixture) keepWork(t *testing.T) BranchCommit {
	t.Helper()
	ctx := context.Background()
	s.write(t, "gone.txt", "bye\n")
	s.git(t, "add", "-A")
	s.git(t, "commit", "--quiet", "-m", "gone.txt")
	s.git(t, "push", "--quiet", "origin", "main")
	s.prepare(t, "b-1")
	s.write(t, "README.md", "hello, kept\n")
	require.NoError(t, os.Remove(filepath.Join(s.work, "gone.txt")))
	s.write(t, "new.txt", "new\n")
	bc, err := Step{}.CommitBranch(ctx, s.runner, BranchOptions{Dir: s.work, BuildID: "b-1", Branch: "kiln/b-1",
		AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com"})
	require.NoError(t, err)
	require.NoError(t, Step{}.PushBranch(ctx, s.runner, PushBranchOptions{Dir: s.work, Branch: "kiln/b-1", Commit: bc.Commit}))
	return bc
}

// requireKeptState checks the working tree holds b-1's kept work as
// uncommitted changes on HEAD, with the index on HEAD.
func (s *fixture) requireKeptState(t *testing.T, head string) {
	t.Helper()
	require.Equal(t, head, s.head(t, s.work, "HEAD"))
	require.Equal(t, "hello, kept\n", s.read(t, "README.md"))
	require.Equal(t, "new\n", s.read(t, "new.txt"))
	require.False(t, s.exists("gone.txt"))
	require.Equal(t, " M README.md\n D gone.txt\n?? new.txt\n", s.status(t), "uncommitted, nothing staged")
}

// The follow-up's workspace has the commit: applied from it, in place.
func TestApplyKeptLocal(t *testing.T) {
	t.Parallel()
	s := setup(t)
	bc := s.keepWork(t)
	ws := s.prepare(t, "b-2")
	require.Equal(t, "refs/heads/kiln/b-1", ws.AlreadyKept)
	require.Empty(t, s.status(t))

	a, err := Step{}.ApplyKept(context.Background(), s.runner, ApplyOptions{Dir: s.work, Branch: "kiln/b-1",
		Commit: bc.Commit, Remote: "origin"})
	require.NoError(t, err)
	require.Equal(t, Applied{Commit: bc.Commit, Files: []string{"README.md", "gone.txt", "new.txt"}}, a)
	s.requireKeptState(t, ws.Head)

	// Nothing of it is left over for the build after, should this one stop before its agent.
	ws = s.prepare(t, "b-3")
	require.Nil(t, ws.Leftovers)
	require.Empty(t, s.status(t))
}

// The project branch moved on since: the kept work is merged onto its head.
func TestApplyKeptOnAMovedHead(t *testing.T) {
	t.Parallel()
	s := setup(t)
	bc := s.keepWork(t)
	theirs := s.pushFromElsewhere(t)
	ws := s.prepare(t, "b-2")
	require.Equal(t, theirs, ws.Head)

	a, err := Step{}.ApplyKept(context.Background(), s.runner, ApplyOptions{Dir: s.work, Branch: "kiln/b-1", Commit: bc.Commit})
	require.NoError(t, err)
	require.Equal(t, []string{"README.md", "gone.txt", "new.txt"}, a.Files)
	s.requireKeptState(t, theirs)
	require.Equal(t, "theirs\n", s.read(t, "theirs.txt"), "the head's own change stays")
}

// A workspace that never had the commit (the pod was replaced) fetches it.
func TestApplyKeptFromTheRemote(t *testing.T) {
	t.Parallel()
	s := setup(t)
	bc := s.keepWork(t)
	fresh := filepath.Join(t.TempDir(), "fresh")
	s.run(t, s.work, "git", "clone", "--quiet", "--no-local", "--single-branch", "--branch", "main", s.remote, fresh)
	s.work = fresh
	require.Empty(t, s.gitAllowFail(t, "cat-file", "-t", bc.Commit), "the clone lacks the kept commit")
	ws := s.prepare(t, "b-2")

	a, err := Step{}.ApplyKept(context.Background(), s.runner, ApplyOptions{Dir: s.work, Branch: "kiln/b-1",
		Commit: bc.Commit, Remote: "origin"})
	require.NoError(t, err)
	require.True(t, a.Fetched)
	require.Equal(t, bc.Commit, a.Commit)
	s.requireKeptState(t, ws.Head)
	require.Equal(t, bc.Commit, s.head(t, s.work, "refs/heads/kiln/b-1"), "kept locally too")
}

// Kept work that is nowhere, or that conflicts with the head, is refused
// naming the branch; the working tree stays clean.
func TestApplyKeptFails(t *testing.T) {
	t.Parallel()
	t.Run("gone", func(t *testing.T) {
		t.Parallel()
		s := setup(t)
		s.prepare(t, "b-2")
		_, err := Step{}.ApplyKept(context.Background(), s.runner, ApplyOptions{Dir: s.work, Branch: "kiln/b-1",
			Commit: "0123456789abcdef0123456789abcdef01234567", Remote: "origin"})
		require.ErrorIs(t, err, ErrKeptWorkGone)
		require.ErrorContains(t, err, "branch kiln/b-1")
		require.Empty(t, s.status(t))
	})
	t.Run("conflict", func(t *testing.T) {
		t.Parallel()
		s := setup(t)
		bc := s.keepWork(t)
		s.prepare(t, "b-2")
		s.write(t, "README.md", "hello, theirs\n")
		s.git(t, "commit", "--quiet", "-am", "theirs")
		s.git(t, "push", "--quiet", "origin", "main")
		s.prepare(t, "b-3")
		_, err := Step{}.ApplyKept(context.Background(), s.runner, ApplyOptions{Dir: s.work, Branch: "kiln/b-1", Commit: bc.Commit})
		require.ErrorIs(t, err, ErrKeptWorkConflict)
		require.ErrorContains(t, err, "kiln/b-1")
		require.ErrorContains(t, err, "README.md")
		require.Empty(t, s.status(t))
		require.Equal(t, "hello, theirs\n", s.read(t, "README.md"))
	})
}

// On a private remote the kept branch is pushed and fetched with the
// project's credentials, which end up nowhere in the workspace.
func TestKeptWorkWithCredentials(t *testing.T) {
	t.Parallel()
	p := setupPrivate(t)
	ctx := context.Background()
	creds := &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken, URL: p.url}
	opts := p.prepareOpts("b-1")
	opts.Credentials = creds
	_, err := Step{}.Prepare(ctx, p.runner, opts)
	require.NoError(t, err)
	p.write(t, "index.html", "<h1>Kept</h1>\n")
	bc, err := Step{}.CommitBranch(ctx, p.runner, BranchOptions{Dir: p.work, BuildID: "b-1", Branch: "kiln/b-1",
		AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com"})
	require.NoError(t, err)
	err = Step{}.PushBranch(ctx, p.runner, PushBranchOptions{Dir: p.work, Branch: "kiln/b-1", Commit: bc.Commit, Credentials: creds})
	require.NoError(t, err)
	require.Equal(t, bc.Commit, p.srv.Head(t, "acme/site", "kiln/b-1"))
	p.requireNoToken(t)

	// A new pod's clone has only main: the kept commit is fetched with the token.
	fresh := filepath.Join(t.TempDir(), "fresh")
	argv, stdin, err := httpsCreds().Wrap([]string{"git", "clone", "--quiet", "--single-branch", "--branch", "main", p.url, fresh})
	require.NoError(t, err)
	_, stderr, code, err := p.runner.Run(ctx, argv, stdin)
	require.NoError(t, err)
	require.Equal(t, 0, code, "clone: %s", stderr)
	p.work = fresh
	opts = p.prepareOpts("b-2")
	opts.Credentials = creds
	_, err = Step{}.Prepare(ctx, p.runner, opts)
	require.NoError(t, err)
	a, err := Step{}.ApplyKept(ctx, p.runner, ApplyOptions{Dir: p.work, Branch: "kiln/b-1", Commit: bc.Commit,
		Remote: "origin", Credentials: creds})
	require.NoError(t, err)
	require.True(t, a.Fetched)
	require.Equal(t, "<h1>Kept</h1>\n", p.read(t, "index.html"))
	p.requireNoToken(t)

	// Without the token the fetch is refused: a failed git command, not "gone".
	p.work = filepath.Join(t.TempDir(), "other")
	argv, stdin, err = httpsCreds().Wrap([]string{"git", "clone", "--quiet", "--single-branch", "--branch", "main", p.url, p.work})
	require.NoError(t, err)
	_, _, code, err = p.runner.Run(ctx, argv, stdin)
	require.NoError(t, err)
	require.Equal(t, 0, code)
	_, err = Step{}.ApplyKept(ctx, p.runner, ApplyOptions{Dir: p.work, Branch: "kiln/b-1", Commit: bc.Commit, Remote: "origin"})
	var ce *CommandError
	require.ErrorAs(t, err, &ce)
	require.NotErrorIs(t, err, ErrKeptWorkGone)
}
