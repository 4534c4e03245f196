package gitstep

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestCommitCommand(t *testing.T) {
	t.Parallel()
	argv, stdin, err := CommitCommand(Options{
		Dir: "/workspace", BuildID: "b-123", AuthorName: "Kiln Bot", AuthorEmail: "bot@kiln.example",
		Body: "Make the heading friendlier.\n",
	})
	require.NoError(t, err)
	want := []string{"git", "-C", "/workspace", "-c", "user.name=Kiln Bot", "-c", "user.email=bot@kiln.example", "commit", "-F", "-"}
	if diff := cmp.Diff(want, argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	require.Equal(t, "Kiln build b-123\n\nMake the heading friendlier.\n\nKiln-Build-Id: b-123\n", string(stdin))

	_, stdin, err = CommitCommand(Options{BuildID: "b-1", AuthorName: "A", AuthorEmail: "a@b", Subject: "feat: x\nsecond line"})
	require.NoError(t, err)
	require.Equal(t, "feat: x\n\nKiln-Build-Id: b-1\n", string(stdin))
}

func TestOptionsRefused(t *testing.T) {
	t.Parallel()
	ok := Options{BuildID: "b1", AutoCommit: true, AutoPush: true, AuthorName: "A", AuthorEmail: "a@example.com", Branch: "main"}
	tests := []struct {
		name   string
		change func(*Options)
		msg    string
	}{
		{"no build id", func(o *Options) { o.BuildID = "" }, "build id: required"},
		{"build id with newline", func(o *Options) { o.BuildID = "b1\nKiln-Build-Id: other" }, "build id: must not contain"},
		{"no author", func(o *Options) { o.AuthorName = " " }, "author name: required"},
		{"author with brackets", func(o *Options) { o.AuthorName = "A <evil@x>" }, "author name: must not"},
		{"bad email", func(o *Options) { o.AuthorEmail = "nope" }, "author email: must be an email"},
		{"email with newline", func(o *Options) { o.AuthorEmail = "a@b\nc" }, "author email: must not"},
		{"no branch", func(o *Options) { o.Branch = "" }, "branch: required"},
		{"force refspec", func(o *Options) { o.Branch = "+main" }, "must not start with '-' or '+'"},
		{"flag as branch", func(o *Options) { o.Branch = "--force" }, "must not start with '-' or '+'"},
		{"refspec in branch", func(o *Options) { o.Branch = "main:other" }, "must not contain"},
		{"full ref", func(o *Options) { o.Branch = "refs/heads/main" }, "no refs/ prefix"},
		{"dotdot", func(o *Options) { o.Branch = "a..b" }, "not a valid git branch name"},
		{"lock", func(o *Options) { o.Branch = "a.lock" }, "not a valid git branch name"},
		{"flag as remote", func(o *Options) { o.Remote = "--mirror" }, "remote \"--mirror\": must not start with '-' or '+'"},
		{"all at once", func(o *Options) { o.BuildID, o.AuthorName, o.Branch = "", "", "" }, "build id: required\nauthor name: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := ok
			tt.change(&o)
			err := o.withDefaults().validate()
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.Contains(t, err.Error(), tt.msg)
		})
	}
	require.NoError(t, ok.withDefaults().validate())
	noPush := ok
	noPush.AutoPush, noPush.Branch = false, ""
	require.NoError(t, noPush.withDefaults().validate(), "no branch needed without push")
}

func TestPushCommand(t *testing.T) {
	t.Parallel()
	argv, err := PushCommand(Options{Dir: "/w", Branch: "kiln/b-123"})
	require.NoError(t, err)
	require.Equal(t, []string{"git", "-C", "/w", "push", "origin", "HEAD:refs/heads/kiln/b-123"}, argv)

	argv, err = PushCommand(Options{Remote: "https://x-access-token:s3cret@git.example/acme/site.git", Branch: "main"})
	require.NoError(t, err)
	require.Equal(t, []string{"git", "push", "https://x-access-token:s3cret@git.example/acme/site.git", "HEAD:refs/heads/main"}, argv)

	_, err = PushCommand(Options{Remote: "https://u:s3cret@git.example/x.git", Branch: "+main"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
}

// TestPushNeverForces tries branch and remote names meant to turn the push
// into a forced one: each is refused, or yields a plain refspec.
func TestPushNeverForces(t *testing.T) {
	t.Parallel()
	branches := []string{"main", "+main", "-f", "--force", "--force-with-lease", "main --force", "+refs/heads/main",
		"main:+main", "main:main", ":main", "*", "main\n--force", "feature/x", "ünï", "a+b", "--delete", "--mirror"}
	remotes := []string{"origin", "-f", "--force", "--mirror", "origin --force", "+origin", "origin\n-f"}
	for _, b := range branches {
		for _, r := range remotes {
			argv, err := PushCommand(Options{Remote: r, Branch: b})
			if err != nil {
				continue
			}
			require.Len(t, argv, 4, "%q", argv)
			require.Equal(t, []string{"git", "push"}, argv[:2])
			for _, a := range argv[2:] {
				require.False(t, strings.HasPrefix(a, "-") || strings.HasPrefix(a, "+"), "%q in %q", a, argv)
				require.NotContains(t, a, "force")
			}
			require.Equal(t, "HEAD:refs/heads/"+b, argv[3])
			require.Equal(t, 1, strings.Count(argv[3], ":"), "%q", argv[3])
		}
	}
}
