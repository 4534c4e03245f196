package run

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/jobrunner/internal/gitstep"
)

func TestLoadCredentials(t *testing.T) {
	t.Parallel()
	const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
	tests := []struct {
		name    string
		files   map[string]string // nil: no directory configured
		url     string
		want    *gitstep.Credentials
		wantErr string
	}{
		{name: "none configured"},
		{name: "https", files: map[string]string{"git-username": "kiln", "git-token": "t0ken"}, url: "https://git.example/a.git",
			want: &gitstep.Credentials{Kind: "https", Username: "kiln", Token: "t0ken", URL: "https://git.example/a.git"}},
		{name: "https, files ending in a newline", files: map[string]string{"git-username": "kiln\n", "git-token": "t0ken\n"},
			want: &gitstep.Credentials{Kind: "https", Username: "kiln", Token: "t0ken"}},
		{name: "ssh", files: map[string]string{"ssh-private-key": key, "known-hosts": "git.example ssh-ed25519 AAAA\n"},
			want: &gitstep.Credentials{Kind: "ssh", SSHPrivateKey: []byte(key), KnownHosts: []byte("git.example ssh-ed25519 AAAA\n")}},
		{name: "empty directory", files: map[string]string{}, wantErr: "neither git-token nor ssh-private-key"},
		{name: "both kinds", files: map[string]string{"git-username": "kiln", "git-token": "t0ken", "ssh-private-key": key,
			"known-hosts": "h"}, wantErr: "both git-token and ssh-private-key"},
		{name: "token without username", files: map[string]string{"git-token": "t0ken"}, wantErr: "username: required"},
		{name: "ssh without known hosts", files: map[string]string{"ssh-private-key": key}, wantErr: "known hosts: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := ""
			if tt.files != nil {
				dir = t.TempDir()
				for k, v := range tt.files {
					require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte(v), 0o400))
				}
			}
			got, err := loadCredentials(dir, tt.url)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), "t0ken")
				require.NotContains(t, err.Error(), "AAAA")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}
