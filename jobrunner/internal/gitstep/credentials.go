package gitstep

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
)

// Credential kinds (the values of schema.Repository.Credentials).
const (
	CredentialsHTTPS = "https"
	CredentialsSSH   = "ssh"
)

// ErrInvalidCredentials wraps every refusal of bad Credentials. Its messages
// name the field at fault, never its value.
var ErrInvalidCredentials = errors.New("invalid repository credentials")

// Credentials reach a private repository, for the commands that talk to the
// remote (Prepare's fetch, Run's push) and for nothing else. Wrap turns such
// a git command into one that receives the secret on its standard input:
// argv carries only fixed text, so the secret never shows in `ps`, in a
// CommandError, in .git/config or in the remote URL.
//
// A nil *Credentials means none: Wrap returns the command as it is.
type Credentials struct {
	// Kind is CredentialsHTTPS or CredentialsSSH.
	Kind string
	// Username and Token answer git's credential request (HTTPS).
	Username string
	Token    string
	// SSHPrivateKey and KnownHosts are the key and the known_hosts lines
	// ssh uses and checks the host with (SSH).
	SSHPrivateKey []byte
	KnownHosts    []byte
	// URL is the repository's URL, optional. For HTTPS it scopes the helper
	// to its scheme://host[:port]: a remote or an insteadOf rewritten in the
	// workspace's .git/config (which the agent can edit) cannot get the
	// token offered to another host.
	URL string
}

// WrapShell is argv[0] of a wrapped command; argv[3] (the shell's $0) is WrapName.
const (
	WrapShell = "sh"
	WrapName  = "kiln-git"
)

// sshEnd ends the key and then the known_hosts lines on a wrapped SSH
// command's stdin; neither may contain it as a line.
const sshEnd = "--kiln-end-of-file--"

// httpsScript reads the user name and the token, one line each, from stdin
// and runs the git command ("$@") with them in its environment only.
const httpsScript = `IFS= read -r KILN_GIT_USERNAME && IFS= read -r KILN_GIT_PASSWORD || { echo "kiln: no credentials on stdin" >&2; exit 128; }
export KILN_GIT_USERNAME KILN_GIT_PASSWORD
GIT_TERMINAL_PROMPT=0 exec "$@"`

// credentialHelper answers git's `get` with the two variables httpsScript
// exports; for `store` and `erase` it does nothing. Its text holds no secret.
const credentialHelper = `!f() { test "$1" = get || exit 0; printf 'username=%s\npassword=%s\n' "$KILN_GIT_USERNAME" "$KILN_GIT_PASSWORD"; }; f`

// sshScript writes the key and known_hosts from stdin into a private
// directory, runs the git command ("$@") with ssh pointed at them, and
// removes the directory however the command ends.
const sshScript = `umask 077
d=$(mktemp -d) || exit 128
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP INT TERM
readpart() { while IFS= read -r l; do [ "$l" = "` + sshEnd + `" ] && return 0; printf '%s\n' "$l"; done; return 1; }
readpart > "$d/key" && readpart > "$d/known_hosts" || { echo "kiln: no ssh key on stdin" >&2; exit 128; }
case "$d" in *"'"*) echo "kiln: unusable temporary directory" >&2; exit 128 ;; esac
GIT_SSH_COMMAND="ssh -F /dev/null -i '$d/key' -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile='$d/known_hosts' -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes" GIT_TERMINAL_PROMPT=0 "$@"`

// gitSafety are the options every wrapped git command gets before its
// subcommand: no hooks and no fsmonitor (the workspace's, which the agent
// may have written, would run with the secret in their environment). Given
// with -c, they are not written to .git/config.
var gitSafety = []string{"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"}

// Wrap returns the command to run instead of argv (a git command, argv[0]
// "git") and its stdin, which carries the secret:
//
//	sh -c SCRIPT kiln-git git -c credential.helper= -c credential[.URL].helper=HELPER ... ARGS   (HTTPS)
//	sh -c SCRIPT kiln-git git -c core.sshCommand= ... ARGS                                     (SSH)
//
// A nil c returns argv and nil stdin. Wrap refuses an unknown kind, a
// missing field, and values that cannot travel as lines.
func (c *Credentials) Wrap(argv []string) ([]string, []byte, error) {
	if c == nil {
		return argv, nil, nil
	}
	if len(argv) == 0 || argv[0] != "git" {
		return nil, nil, fmt.Errorf("%w: only a git command can be given credentials", ErrInvalidCredentials)
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	git := []string{"git"}
	var script string
	var stdin bytes.Buffer
	switch c.Kind {
	case CredentialsHTTPS:
		key := "credential.helper"
		if scope := c.scope(); scope != "" {
			key = "credential." + scope + ".helper"
		}
		// The empty value drops every helper configured before (a store or
		// cache helper would be told the token and could write it down).
		git = append(git, "-c", "credential.helper=", "-c", key+"="+credentialHelper)
		script = httpsScript
		stdin.WriteString(c.Username + "\n" + c.Token + "\n")
	case CredentialsSSH:
		// GIT_SSH_COMMAND wins over core.sshCommand; emptying it is for clarity.
		git = append(git, "-c", "core.sshCommand=")
		script = sshScript
		for _, part := range [][]byte{c.SSHPrivateKey, c.KnownHosts} {
			stdin.Write(part)
			if !bytes.HasSuffix(part, []byte("\n")) {
				stdin.WriteByte('\n')
			}
			stdin.WriteString(sshEnd + "\n")
		}
	}
	git = append(git, gitSafety...)
	out := append([]string{WrapShell, "-c", script, WrapName}, git...)
	return append(out, argv[1:]...), stdin.Bytes(), nil
}

// Validate checks c without naming any value in its error.
func (c *Credentials) Validate() error {
	if c == nil {
		return nil
	}
	var errs []error
	bad := func(field, rule string) { errs = append(errs, fmt.Errorf("%s: %s", field, rule)) }
	switch c.Kind {
	case CredentialsHTTPS:
		switch {
		case c.Username == "":
			bad("username", "required")
		case hasControl(c.Username) || strings.ContainsAny(c.Username, ":@ "):
			bad("username", "must not contain control characters, spaces, ':' or '@'")
		}
		switch {
		case c.Token == "":
			bad("token", "required")
		case hasControl(c.Token):
			bad("token", "must not contain control characters")
		}
		if c.URL != "" && c.scope() == "" {
			bad("url", "must be an absolute http or https URL without credentials")
		}
	case CredentialsSSH:
		for _, f := range []struct {
			name string
			v    []byte
		}{{"ssh private key", c.SSHPrivateKey}, {"known hosts", c.KnownHosts}} {
			switch {
			case len(bytes.TrimSpace(f.v)) == 0:
				bad(f.name, "required")
			case bytes.ContainsAny(f.v, "\x00\r"):
				bad(f.name, "must not contain NUL or CR characters")
			case bytes.Contains(append([]byte("\n"), f.v...), []byte("\n"+sshEnd+"\n")),
				bytes.HasSuffix(f.v, []byte("\n"+sshEnd)), string(f.v) == sshEnd:
				bad(f.name, "must not contain the line "+sshEnd)
			}
		}
	case "":
		bad("kind", "required")
	default:
		bad("kind", fmt.Sprintf("must be %q or %q (got %q)", CredentialsHTTPS, CredentialsSSH, c.Kind))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidCredentials, errors.Join(errs...))
	}
	return nil
}

// scope is URL's scheme://host[:port] for a credential.<url>.helper key,
// or "" when URL is empty or not an http(s) URL without user info.
func (c *Credentials) scope() string {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		strings.ContainsAny(u.Host, "\"\\ \n") {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// Scrub replaces the secret, wherever it shows in b, with "***".
func (c *Credentials) Scrub(b []byte) []byte {
	if c == nil {
		return b
	}
	for _, s := range [][]byte{[]byte(c.Token), bytes.TrimSpace(c.SSHPrivateKey)} {
		if len(s) > 0 {
			b = bytes.ReplaceAll(b, s, []byte("***"))
		}
	}
	return b
}

// String names the kind (and the HTTPS user), never the secret.
func (c Credentials) String() string {
	switch c.Kind {
	case CredentialsHTTPS:
		return fmt.Sprintf("https credentials for user %q", c.Username)
	default:
		return c.Kind + " credentials"
	}
}

// GoString keeps %#v from printing the secret.
func (c Credentials) GoString() string { return c.String() }

// LogValue keeps slog from printing the secret.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }
