package gitstep

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	testToken = "s3cr3t-t0ken-value"
	testKey   = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAc2VjcmV0LWtleS1ib2R5\n-----END OPENSSH PRIVATE KEY-----\n"
	testHosts = "git.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey\n"
)

func httpsCreds() *Credentials {
	return &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken}
}

func sshCreds() *Credentials {
	return &Credentials{Kind: CredentialsSSH, SSHPrivateKey: []byte(testKey), KnownHosts: []byte(testHosts)}
}

func TestCredentialsWrap(t *testing.T) {
	t.Parallel()
	push := []string{"git", "-C", "/w", "push", "origin", "HEAD:refs/heads/main"}
	tests := []struct {
		name      string
		creds     *Credentials
		argv      []string
		wantArgv  []string // nil: argv only checked for the secret
		wantStdin string   // "" with wantErr or nil creds
		secrets   []string
		wantErr   string
	}{
		{name: "none", creds: nil, argv: push, wantArgv: push},
		{name: "https", creds: httpsCreds(), argv: push,
			wantArgv: []string{"sh", "-c", httpsScript, "kiln-git", "git",
				"-c", "credential.helper=", "-c", "credential.helper=" + credentialHelper,
				"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
				"-C", "/w", "push", "origin", "HEAD:refs/heads/main"},
			wantStdin: "kiln\n" + testToken + "\n", secrets: []string{testToken}},
		{name: "https scoped to the repository's host",
			creds: &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken, URL: "https://git.example:8443/acme/site.git"},
			argv:  push,
			wantArgv: []string{"sh", "-c", httpsScript, "kiln-git", "git",
				"-c", "credential.helper=", "-c", "credential.https://git.example:8443.helper=" + credentialHelper,
				"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
				"-C", "/w", "push", "origin", "HEAD:refs/heads/main"},
			wantStdin: "kiln\n" + testToken + "\n", secrets: []string{testToken}},
		{name: "ssh", creds: sshCreds(), argv: push,
			wantArgv: []string{"sh", "-c", sshScript, "kiln-git", "git", "-c", "core.sshCommand=",
				"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
				"-C", "/w", "push", "origin", "HEAD:refs/heads/main"},
			wantStdin: testKey + sshEnd + "\n" + testHosts + sshEnd + "\n",
			secrets:   []string{"c2VjcmV0LWtleS1ib2R5", "AAAAC3NzaC1lZDI1NTE5AAAAI"}},
		{name: "ssh key without a final newline", creds: &Credentials{Kind: CredentialsSSH,
			SSHPrivateKey: []byte(strings.TrimSuffix(testKey, "\n")), KnownHosts: []byte(strings.TrimSuffix(testHosts, "\n"))},
			argv: push, wantStdin: testKey + sshEnd + "\n" + testHosts + sshEnd + "\n", secrets: []string{"c2VjcmV0LWtleS1ib2R5"}},
		{name: "unknown kind", creds: &Credentials{Kind: "netrc", Token: testToken}, argv: push,
			wantErr: `kind: must be "https" or "ssh" (got "netrc")`},
		{name: "no kind", creds: &Credentials{Token: testToken}, argv: push, wantErr: "kind: required"},
		{name: "https without token", creds: &Credentials{Kind: CredentialsHTTPS, Username: "kiln"}, argv: push,
			wantErr: "token: required"},
		{name: "https without username", creds: &Credentials{Kind: CredentialsHTTPS, Token: testToken}, argv: push,
			wantErr: "username: required"},
		{name: "token with a newline", creds: &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken + "\nx"},
			argv: push, wantErr: "token: must not contain control characters"},
		{name: "url with credentials", creds: &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken,
			URL: "https://kiln:" + testToken + "@git.example/a.git"}, argv: push, wantErr: "url: must be"},
		{name: "ssh without known hosts", creds: &Credentials{Kind: CredentialsSSH, SSHPrivateKey: []byte(testKey)}, argv: push,
			wantErr: "known hosts: required"},
		{name: "ssh key holding the end marker", creds: &Credentials{Kind: CredentialsSSH,
			SSHPrivateKey: []byte(testKey + sshEnd + "\n"), KnownHosts: []byte(testHosts)}, argv: push,
			wantErr: "ssh private key: must not contain the line"},
		{name: "not git", creds: httpsCreds(), argv: []string{"sh", "-c", "git push"}, wantErr: "only a git command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			argv, stdin, err := tt.creds.Wrap(tt.argv)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, ErrInvalidCredentials)
				require.ErrorContains(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), testToken, "the error names the field, never the value")
				require.Nil(t, argv)
				return
			}
			require.NoError(t, err)
			if tt.wantArgv != nil {
				require.Equal(t, tt.wantArgv, argv)
			}
			require.Equal(t, tt.wantStdin, string(stdin))
			for _, s := range tt.secrets {
				require.Contains(t, string(stdin), s, "the secret travels on stdin")
				for _, a := range argv {
					require.NotContains(t, a, s, "the secret must never be in argv")
				}
			}
		})
	}
}

func TestCredentialsNeverPrinted(t *testing.T) {
	t.Parallel()
	for _, c := range []*Credentials{httpsCreds(), sshCreds()} {
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "creds", c, "opts", Options{Credentials: c})
		for _, s := range []string{
			fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%s", *c),
			fmt.Sprintf("%+v", Options{Credentials: c}), fmt.Sprintf("%+v", PrepareOptions{Credentials: c}), logged.String(),
		} {
			require.NotContains(t, s, testToken)
			require.NotContains(t, s, "c2VjcmV0LWtleS1ib2R5")
			require.Contains(t, s, c.Kind+" credentials")
		}
	}
}

func TestCredentialsScrub(t *testing.T) {
	t.Parallel()
	require.Equal(t, "fatal: *** refused", string(httpsCreds().Scrub([]byte("fatal: "+testToken+" refused"))))
	var none *Credentials
	require.Equal(t, "as is", string(none.Scrub([]byte("as is"))))
}

// TestHTTPSHelperAnswersGit runs the wrapped `git credential fill` through
// sh and real git: the helper answers with the user name and token from
// stdin, and (scoped) only for the repository's host.
func TestHTTPSHelperAnswersGit(t *testing.T) {
	t.Parallel()
	s := setup(t)
	c := &Credentials{Kind: CredentialsHTTPS, Username: "kiln", Token: testToken, URL: "http://127.0.0.1:8080/r.git"}
	fill := func(host string) (string, int) {
		argv, stdin, err := c.Wrap([]string{"git", "credential", "fill"})
		require.NoError(t, err)
		// What git's credential protocol reads after the script took its two lines.
		stdin = append(stdin, "protocol=http\nhost="+host+"\n\n"...)
		out, _, code, err := s.runner.Run(context.Background(), argv, stdin)
		require.NoError(t, err)
		return string(out), code
	}
	out, code := fill("127.0.0.1:8080")
	require.Equal(t, 0, code)
	require.Contains(t, out, "username=kiln\npassword="+testToken+"\n")

	out, code = fill("elsewhere.example")
	require.NotEqual(t, 0, code, "another host gets no answer (and no prompt)")
	require.NotContains(t, out, testToken)
}

// TestSSHScript runs the wrapped SSH command with a stand-in for git that
// shows what it was given: the key and known_hosts arrive in a private
// directory that GIT_SSH_COMMAND names and that is gone afterwards.
func TestSSHScript(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-git")
	require.NoError(t, os.WriteFile(fake, []byte(`#!/bin/sh
printf 'ssh=%s\n' "$GIT_SSH_COMMAND"
d=$(dirname "$(echo "$GIT_SSH_COMMAND" | sed "s/.* -i '\([^']*\)'.*/\1/")")
printf 'dir=%s\n' "$d"
stat -c 'mode=%a' "$d" "$d/key" "$d/known_hosts"
printf 'args=%s\n' "$*"
cat "$d/key" "$d/known_hosts"
exit 3
`), 0o755))
	argv, stdin, err := sshCreds().Wrap([]string{"git", "-C", "/w", "fetch", "origin"})
	require.NoError(t, err)
	require.Equal(t, "git", argv[4])
	argv[4] = fake
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.Output()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 3, ee.ExitCode(), "git's exit code is the command's: %s", out)

	text := string(out)
	require.Contains(t, text, "-o IdentitiesOnly=yes")
	require.Contains(t, text, "-o StrictHostKeyChecking=yes")
	require.Contains(t, text, "-F /dev/null")
	require.Contains(t, text, "mode=700\nmode=600\nmode=600\n")
	require.Contains(t, text, "args=-c core.sshCommand= -c core.hooksPath=/dev/null -c core.fsmonitor=false -C /w fetch origin\n")
	require.True(t, strings.HasSuffix(text, testKey+testHosts), text)
	var tmp string
	for _, l := range strings.Split(text, "\n") {
		if d, ok := strings.CutPrefix(l, "dir="); ok {
			tmp = d
		}
	}
	require.True(t, strings.HasPrefix(tmp, dir+"/"), "the key is written under TMPDIR: %q", tmp)
	_, err = os.Stat(tmp)
	require.ErrorIs(t, err, os.ErrNotExist, "the key's directory is removed when git ends")
}
