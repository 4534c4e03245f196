package run

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kilnbuild/kiln/jobrunner/internal/gitstep"
	"github.com/kilnbuild/kiln/jobtemplates"
)

// maxCredentialFile bounds each credential file read.
const maxCredentialFile = 64 << 10

// loadCredentials reads the repository credentials the Job mounts at dir
// (jobtemplates.GitCredentialsDir): git-username and git-token, or
// ssh-private-key and known-hosts; which pair is there says the kind. nil,
// nil when dir is empty. Errors name files, never their content.
func loadCredentials(dir, repoURL string) (*gitstep.Credentials, error) {
	if dir == "" {
		return nil, nil
	}
	read := func(key string) ([]byte, bool, error) {
		p := filepath.Join(dir, key)
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading %s: %w", p, err)
		}
		if fi.Size() > maxCredentialFile {
			return nil, true, fmt.Errorf("reading %s: larger than %d bytes", p, maxCredentialFile)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, true, fmt.Errorf("reading %s: %w", p, err)
		}
		return b, true, nil
	}
	token, hasToken, err := read(jobtemplates.SecretKeyGitToken)
	if err != nil {
		return nil, err
	}
	key, hasKey, err := read(jobtemplates.SecretKeySSHKey)
	if err != nil {
		return nil, err
	}
	var c *gitstep.Credentials
	switch {
	case hasToken && hasKey:
		return nil, fmt.Errorf("repository credentials in %s: both %s and %s: give one kind", dir,
			jobtemplates.SecretKeyGitToken, jobtemplates.SecretKeySSHKey)
	case hasToken:
		user, _, err := read(jobtemplates.SecretKeyGitUsername)
		if err != nil {
			return nil, err
		}
		// A trailing newline (a file written by hand) is not part of either.
		c = &gitstep.Credentials{Kind: gitstep.CredentialsHTTPS, URL: repoURL,
			Username: strings.TrimRight(string(user), "\r\n"), Token: strings.TrimRight(string(token), "\r\n")}
	case hasKey:
		hosts, _, err := read(jobtemplates.SecretKeyKnownHosts)
		if err != nil {
			return nil, err
		}
		c = &gitstep.Credentials{Kind: gitstep.CredentialsSSH, SSHPrivateKey: key, KnownHosts: hosts, URL: repoURL}
	default:
		return nil, fmt.Errorf("repository credentials in %s: neither %s nor %s", dir,
			jobtemplates.SecretKeyGitToken, jobtemplates.SecretKeySSHKey)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("repository credentials in %s: %w", dir, err)
	}
	return c, nil
}
