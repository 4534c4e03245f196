package gitstep

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

// recorder is a Runner that records every argv before running it.
type recorder struct {
	Runner
	argvs [][]string
}

func (r *recorder) Run(ctx context.Context, argv []string, stdin []byte) ([]byte, []byte, int, error) {
	r.argvs = append(r.argvs, argv)
	return r.Runner.Run(ctx, argv, stdin)
}

func (s *fixture) opts() Options {
	return Options{
		Dir: s.work, BuildID: "b-42", AutoCommit: true, AutoPush: true,
		AuthorName: "Kiln Bot", AuthorEmail: "kiln@example.com", Branch: "main",
	}
}

func (s *fixture) head(t *testing.T, dir, rev string) string {
	t.Helper()
	return strings.TrimSpace(string(s.run(t, dir, "git", "rev-parse", rev)))
}

func TestStepNoChanges(t *testing.T) {
	t.Parallel()
	s := setup(t)
	before := s.head(t, s.work, "HEAD")
	rec := &recorder{Runner: s.runner}
	res, err := Step{}.Run(context.Background(), rec, s.opts())
	require.NoError(t, err)
	require.Equal(t, Result{FilesChanged: []string{}}, res)
	require.Equal(t, before, s.head(t, s.work, "HEAD"), "no commit")
	require.Equal(t, before, s.head(t, s.remote, "main"), "no push")
	require.Len(t, rec.argvs, 2, "add and status only: %q", rec.argvs)
}

func TestStepWithoutAutoCommit(t *testing.T) {
	t.Parallel()
	s := setup(t)
	before := s.head(t, s.work, "HEAD")
	s.write(t, "index.html", "<h1>Welcome</h1>\n")
	require.NoError(t, os.Rename(filepath.Join(s.work, "README.md"), filepath.Join(s.work, "README.txt")))
	opts := s.opts()
	opts.AutoCommit = false // AutoPush alone pushes nothing
	res, err := Step{}.Run(context.Background(), s.runner, opts)
	require.NoError(t, err)
	require.Equal(t, []string{"README.md", "README.txt", "index.html"}, res.FilesChanged)
	require.Empty(t, res.CommitSHA)
	require.False(t, res.Pushed)
	require.Equal(t, before, s.head(t, s.work, "HEAD"))
	require.Empty(t, s.git(t, "diff", "--cached", "--name-only"), "the index is left alone")
}

func TestStepCommitAndPush(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.write(t, "index.html", "<h1>Welcome to Acme</h1>\n")
	s.write(t, "docs/ünï côdé.md", "x\n")
	s.write(t, "gone.txt", "bye\n")
	s.write(t, "old.txt", strings.Repeat("same content, to be detected as a rename\n", 20))
	s.git(t, "add", "-A")
	s.git(t, "commit", "--quiet", "-m", "more files")
	s.git(t, "push", "--quiet", "origin", "main")
	base := s.head(t, s.work, "HEAD")

	require.NoError(t, os.Remove(filepath.Join(s.work, "gone.txt")))
	require.NoError(t, os.Rename(filepath.Join(s.work, "old.txt"), filepath.Join(s.work, "new.txt")))
	s.write(t, "index.html", "<h1>Welcome</h1>\n")
	s.write(t, "with space.txt", "new\n")

	rec := &recorder{Runner: s.runner}
	opts := s.opts()
	opts.Body = "Change the heading."
	res, err := Step{}.Run(context.Background(), rec, opts)
	require.NoError(t, err)

	require.Equal(t, []string{"gone.txt", "index.html", "new.txt", "old.txt", "with space.txt"}, res.FilesChanged)
	require.Contains(t, res.Changes, Change{Kind: Renamed, Path: "new.txt", OrigPath: "old.txt", Code: "R "})
	require.Contains(t, res.Changes, Change{Kind: Deleted, Path: "gone.txt", Code: "D "})
	require.True(t, res.Pushed)
	require.Len(t, res.CommitSHA, 40)
	require.Equal(t, res.CommitSHA, s.head(t, s.work, "HEAD"))
	require.Equal(t, res.CommitSHA, s.head(t, s.remote, "main"), "the commit is in the remote")
	require.Equal(t, base, s.head(t, s.remote, "main~1"))

	show := func(format string) string {
		return strings.TrimSpace(string(s.run(t, s.remote, "git", "log", "-1", "--format="+format, "main")))
	}
	require.Equal(t, "Kiln Bot <kiln@example.com>", show("%an <%ae>"))
	require.Equal(t, "Kiln Bot <kiln@example.com>", show("%cn <%ce>"))
	require.Equal(t, "Kiln build b-42", show("%s"))
	require.Equal(t, "Kiln build b-42\n\nChange the heading.\n\nKiln-Build-Id: b-42", show("%B"))
	require.Equal(t, "b-42", show("%(trailers:key=Kiln-Build-Id,valueonly)"))
	files := string(s.run(t, s.remote, "git", "show", "--name-status", "--format=", "-M", "main"))
	require.Equal(t, "D\tgone.txt\nM\tindex.html\nR100\told.txt\tnew.txt\nA\twith space.txt\n", files)

	wantArgv := [][]string{
		{"git", "-C", s.work, "add", "-A"},
		append([]string{"git", "-C", s.work}, StatusArgs...),
		{"git", "-C", s.work, "-c", "user.name=Kiln Bot", "-c", "user.email=kiln@example.com", "commit", "-F", "-"},
		{"git", "-C", s.work, "rev-parse", "--verify", "HEAD"},
		{"git", "-C", s.work, "push", "origin", "HEAD:refs/heads/main"},
	}
	if diff := cmp.Diff(wantArgv, rec.argvs); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
}

func TestStepCommitWithoutPush(t *testing.T) {
	t.Parallel()
	s := setup(t)
	before := s.head(t, s.remote, "main")
	s.write(t, "a.txt", "a\n")
	opts := s.opts()
	opts.AutoPush = false
	res, err := Step{}.Run(context.Background(), s.runner, opts)
	require.NoError(t, err)
	require.Equal(t, []string{"a.txt"}, res.FilesChanged)
	require.NotEmpty(t, res.CommitSHA)
	require.False(t, res.Pushed)
	require.Equal(t, before, s.head(t, s.remote, "main"))
}

func TestStepPushToNewBranch(t *testing.T) {
	t.Parallel()
	s := setup(t)
	s.write(t, "a.txt", "a\n")
	opts := s.opts()
	opts.Branch = "kiln/b-42"
	res, err := Step{}.Run(context.Background(), s.runner, opts)
	require.NoError(t, err)
	require.True(t, res.Pushed)
	require.Equal(t, res.CommitSHA, s.head(t, s.remote, "kiln/b-42"))
}

func TestStepPushRejected(t *testing.T) {
	t.Parallel()
	s := setup(t)

	// Someone else pushes first.
	theirs := s.pushFromElsewhere(t)

	s.write(t, "ours.txt", "ours\n")
	res, err := Step{}.Run(context.Background(), s.runner, s.opts())
	require.ErrorIs(t, err, ErrNonFastForward)
	var pe *PushError
	require.True(t, errors.As(err, &pe))
	require.Contains(t, err.Error(), "pushing to origin branch main: non-fast-forward")
	require.Contains(t, err.Error(), "[rejected]", "git's own message")
	require.False(t, res.Pushed)
	require.Equal(t, []string{"ours.txt"}, res.FilesChanged)
	require.NotEmpty(t, res.CommitSHA)
	require.Equal(t, res.CommitSHA, s.head(t, s.work, "HEAD"), "the local commit is kept")
	require.Equal(t, theirs, s.head(t, s.remote, "main"), "the remote is untouched: no force")
}

func TestStepPushRefusedByHook(t *testing.T) {
	t.Parallel()
	s := setup(t)
	hook := filepath.Join(s.remote, "hooks", "pre-receive")
	require.NoError(t, os.WriteFile(hook, []byte("#!/bin/sh\necho 'branch main is frozen' >&2\nexit 1\n"), 0o755))
	s.write(t, "a.txt", "a\n")
	res, err := Step{}.Run(context.Background(), s.runner, s.opts())
	require.ErrorIs(t, err, ErrRemoteRejected)
	require.Contains(t, err.Error(), "branch main is frozen")
	require.NotEmpty(t, res.CommitSHA)
}

// fakeRunner answers by the git subcommand.
type fakeRunner map[string]func() ([]byte, []byte, int, error)

func (f fakeRunner) Run(_ context.Context, argv []string, _ []byte) ([]byte, []byte, int, error) {
	for _, a := range argv {
		if fn, ok := f[a]; ok {
			return fn()
		}
	}
	return nil, nil, 0, nil
}

func TestStepCommandFailures(t *testing.T) {
	t.Parallel()
	opts := Options{BuildID: "b1", AutoCommit: true, AuthorName: "A", AuthorEmail: "a@b"}
	changed := func() ([]byte, []byte, int, error) { return []byte(" M a\x00"), nil, 0, nil }

	_, err := Step{}.Run(context.Background(), fakeRunner{"add": func() ([]byte, []byte, int, error) {
		return nil, nil, -1, errors.New("exec stream closed")
	}}, opts)
	require.ErrorContains(t, err, "staging changes: exec stream closed")

	res, err := Step{}.Run(context.Background(), fakeRunner{"status": changed, "commit": func() ([]byte, []byte, int, error) {
		return nil, []byte("hint: x\nfatal: unable to write new index file\n"), 128, nil
	}}, opts)
	var ce *CommandError
	require.True(t, errors.As(err, &ce), "%v", err)
	require.Equal(t, 128, ce.ExitCode)
	require.EqualError(t, err, "committing: git commit: exit status 128: fatal: unable to write new index file")
	require.Equal(t, []string{"a"}, res.FilesChanged)

	_, err = Step{}.Run(context.Background(), fakeRunner{"status": func() ([]byte, []byte, int, error) {
		return []byte("garbage"), nil, 0, nil
	}}, opts)
	require.ErrorContains(t, err, "listing changes: git status entry")

	_, err = Step{}.Run(context.Background(), fakeRunner{}, Options{})
	require.ErrorIs(t, err, ErrInvalidOptions)
}

func TestLocalRunner(t *testing.T) {
	t.Parallel()
	out, _, code, err := LocalRunner{}.Run(context.Background(), []string{"sh", "-c", "cat; exit 3"}, []byte("in"))
	require.NoError(t, err)
	require.Equal(t, 3, code)
	require.Equal(t, "in", string(out))

	_, _, _, err = LocalRunner{}.Run(context.Background(), []string{"/nonexistent/git"}, nil)
	require.Error(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, _, err = LocalRunner{}.Run(ctx, []string{"sleep", "10"}, nil)
	require.ErrorIs(t, err, context.Canceled)
}
