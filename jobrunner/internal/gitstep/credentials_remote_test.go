package gitstep

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/gitserver"
)

// privateRemote is a clone (made with the token, as the workspace's clone
// step would, and with a plain URL as origin) of a repository on a
// token-checking git server.
type privateRemote struct {
	*fixture
	srv *gitserver.Server
	url string
}

func setupPrivate(t *testing.T) *privateRemote {
	t.Helper()
	s := setup(t)
	srv := gitserver.Start(t, gitserver.Options{Username: "kiln", Token: testToken})
	url := srv.NewRepo(t, "acme/site", "main", map[string]string{"index.html": "<h1>Hello</h1>\n"})
	work := filepath.Join(t.TempDir(), "clone")
	argv, stdin, err := httpsCreds().Wrap([]string{"git", "clone", "--quiet", url, work})
	require.NoError(t, err)
	_, stderr, code, err := s.runner.Run(context.Background(), argv, stdin)
	require.NoError(t, err)
	require.Equal(t, 0, code, "clone: %s", stderr)
	s.work = work
	return &privateRemote{fixture: s, srv: srv, url: url}
}

// requireNoToken checks that the token is in none of the texts nor in the
// clone's configuration or remote URL.
func (p *privateRemote) requireNoToken(t *testing.T, texts ...string) {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(p.work, ".git", "config"))
	require.NoError(t, err)
	require.NotContains(t, string(cfg), testToken)
	require.Contains(t, string(cfg), "url = "+p.url+"\n", "the remote URL is the plain one")
	for _, s := range texts {
		require.NotContains(t, s, testToken)
	}
}

func TestCredentialsFetchAndPush(t *testing.T) {
	t.Parallel()
	p := setupPrivate(t)
	ctx := context.Background()

	// Someone else pushes; Prepare's fetch with the token brings it in.
	theirs := p.commitElsewhere(t, "theirs.txt")
	ws, err := Step{}.Prepare(ctx, p.runner, PrepareOptions{Dir: p.work, BuildID: "b-1", Remote: "origin", Branch: "main",
		Credentials: &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken, URL: p.url}})
	require.NoError(t, err)
	require.True(t, ws.Fetched)
	require.Equal(t, theirs, ws.Head)

	p.write(t, "index.html", "<h1>Hello, world</h1>\n")
	res, err := Step{}.Run(ctx, p.runner, Options{Dir: p.work, BuildID: "b-1", AutoCommit: true, AutoPush: true,
		AuthorName: "Kiln Bot", AuthorEmail: "bot@kiln.example", Remote: "origin", Branch: "main",
		Credentials: &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken, URL: p.url}})
	require.NoError(t, err)
	require.True(t, res.Pushed)
	require.Equal(t, res.CommitSHA, p.srv.Head(t, "acme/site", "main"), "the server's branch moved to the build's commit")
	p.requireNoToken(t)

	var fetches, pushes int
	for _, r := range p.srv.Requests() {
		if r.Authenticated && r.Service == "git-upload-pack" {
			fetches++
		}
		if r.Authenticated && r.Service == "git-receive-pack" {
			pushes++
		}
	}
	require.Positive(t, fetches)
	require.Positive(t, pushes)
}

func TestCredentialsWrongToken(t *testing.T) {
	t.Parallel()
	p := setupPrivate(t)
	ctx := context.Background()
	const wrong = "wrong-t0ken-value"
	bad := &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: wrong, URL: p.url}

	_, err := Step{}.Prepare(ctx, p.runner, PrepareOptions{Dir: p.work, BuildID: "b-1", Remote: "origin", Branch: "main", Credentials: bad})
	require.Error(t, err)
	var ce *CommandError
	require.ErrorAs(t, err, &ce, "a refused fetch is a failed git command, as without credentials")
	require.Contains(t, err.Error(), "Authentication failed")
	require.True(t, strings.HasPrefix(err.Error(), "fetching main from origin: git fetch: exit status 128"), err.Error())
	require.NotContains(t, err.Error(), wrong)

	before := p.srv.Head(t, "acme/site", "main")
	p.write(t, "index.html", "<h1>Hello, world</h1>\n")
	res, err := Step{}.Run(ctx, p.runner, Options{Dir: p.work, BuildID: "b-1", AutoCommit: true, AutoPush: true,
		AuthorName: "Kiln Bot", AuthorEmail: "bot@kiln.example", Remote: "origin", Branch: "main", Credentials: bad})
	require.ErrorIs(t, err, ErrPermissionDenied)
	var pe *PushError
	require.ErrorAs(t, err, &pe)
	require.Contains(t, pe.Message, "Authentication failed")
	require.NotEmpty(t, res.CommitSHA, "the local commit is kept")
	require.False(t, res.Pushed)
	require.Equal(t, before, p.srv.Head(t, "acme/site", "main"))
	require.NotContains(t, err.Error(), wrong)
	p.requireNoToken(t, err.Error())
	cfg, rerr := os.ReadFile(filepath.Join(p.work, ".git", "config"))
	require.NoError(t, rerr)
	require.NotContains(t, string(cfg), wrong)

	// Without credentials git cannot ask anyone (no terminal): refused the same way.
	p.write(t, "index.html", "<h1>Hello again</h1>\n")
	_, err = Step{}.Run(ctx, p.runner, Options{Dir: p.work, BuildID: "b-2", AutoCommit: true, AutoPush: true,
		AuthorName: "Kiln Bot", AuthorEmail: "bot@kiln.example", Remote: "origin", Branch: "main"})
	require.ErrorIs(t, err, ErrPermissionDenied)
	require.Equal(t, before, p.srv.Head(t, "acme/site", "main"))
}

// commitElsewhere pushes a commit adding name from another clone (made with
// the token) and returns it.
func (p *privateRemote) commitElsewhere(t *testing.T, name string) string {
	t.Helper()
	other := filepath.Join(t.TempDir(), "other")
	c := httpsCreds()
	for _, argv := range [][]string{
		{"git", "clone", "--quiet", p.url, other},
	} {
		wrapped, stdin, err := c.Wrap(argv)
		require.NoError(t, err)
		_, stderr, code, err := p.runner.Run(context.Background(), wrapped, stdin)
		require.NoError(t, err)
		require.Equal(t, 0, code, "%s", stderr)
	}
	require.NoError(t, os.WriteFile(filepath.Join(other, name), []byte("theirs\n"), 0o644))
	p.gitIn(t, other, "add", "-A")
	p.gitIn(t, other, "commit", "--quiet", "-m", "theirs")
	wrapped, stdin, err := c.Wrap([]string{"git", "-C", other, "push", "--quiet", "origin", "HEAD:main"})
	require.NoError(t, err)
	_, stderr, code, err := p.runner.Run(context.Background(), wrapped, stdin)
	require.NoError(t, err)
	require.Equal(t, 0, code, "%s", stderr)
	return p.srv.Head(t, "acme/site", "main")
}
