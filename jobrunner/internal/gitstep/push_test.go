package gitstep

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClassifyPush(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stderr string
		reason error
		msg    string
	}{
		{"fetch first", `To /tmp/remote.git
 ! [rejected]        HEAD -> main (fetch first)
error: failed to push some refs to '/tmp/remote.git'
hint: Updates were rejected because the remote contains work that you do
hint: not have locally.
`, ErrNonFastForward, "! [rejected]        HEAD -> main (fetch first); error: failed to push some refs to '/tmp/remote.git'"},
		{"non-fast-forward", " ! [rejected]        HEAD -> main (non-fast-forward)\nerror: failed to push some refs\n",
			ErrNonFastForward, "(non-fast-forward)"},
		{"ssh key", "git@github.com: Permission denied (publickey).\nfatal: Could not read from remote repository.\n",
			ErrPermissionDenied, "Permission denied (publickey)"},
		{"https 403", "remote: Permission to acme/site.git denied to kiln-bot.\nfatal: unable to access 'https://kiln:tok3n@github.com/acme/site.git/': The requested URL returned error: 403\n",
			ErrPermissionDenied, "unable to access 'https://***@github.com/acme/site.git/'"},
		{"no credentials", "fatal: could not read Username for 'https://git.example': No such device or address\n",
			ErrPermissionDenied, "could not read Username"},
		{"protected branch", "remote: GitLab: You are not allowed to push code to protected branches on this project.\n ! [remote rejected] main -> main (pre-receive hook declined)\n",
			ErrPermissionDenied, "not allowed to push"},
		{"hook declined", " ! [remote rejected] HEAD -> main (pre-receive hook declined)\nerror: failed to push some refs\n",
			ErrRemoteRejected, "pre-receive hook declined"},
		{"network", "fatal: unable to connect to git.example:\ngit.example[0: 10.0.0.1]: errno=Connection refused\n",
			ErrPushFailed, "Connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ClassifyPush("origin", "main", []byte(tt.stderr))
			require.ErrorIs(t, err, tt.reason)
			require.Contains(t, err.Error(), tt.msg)
			require.True(t, strings.HasPrefix(err.Error(), "pushing to origin branch main: "+tt.reason.Error()), err.Error())
			require.NotContains(t, err.Error(), "hint:")
			require.NotContains(t, err.Error(), "tok3n")
			var pe *PushError
			require.True(t, errors.As(error(err), &pe))
		})
	}

	long := ClassifyPush("origin", "main", []byte(strings.Repeat("é", 5000)))
	require.LessOrEqual(t, len(long.Message), maxMessage+10)
}

func TestRedact(t *testing.T) {
	t.Parallel()
	require.Equal(t, "https://***@git.example/a.git and ssh://***@host/x",
		Redact("https://user:p%40ss@git.example/a.git and ssh://git@host/x"))
	require.Equal(t, "git@github.com:acme/site.git", Redact("git@github.com:acme/site.git"))
}
