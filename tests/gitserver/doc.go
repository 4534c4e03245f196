// Package gitserver is a git smart-HTTP server for tests that, like a
// private repository host, refuses every request (clone, fetch, push)
// without the right HTTP Basic credentials. It is `git http-backend` run
// through net/http/cgi behind a handler that compares the user name and
// token in constant time and otherwise answers 401 with
// `WWW-Authenticate: Basic realm="kiln-test"`.
//
//	srv := gitserver.Start(t, gitserver.Options{Username: "kiln", Token: token})
//	url := srv.NewRepo(t, "demo", "main", map[string]string{"README.md": "hi\n"})
//	// ... something clones url with the token, commits and pushes ...
//	head := srv.Head(t, "demo", "main")
//	reqs := srv.Requests() // who was let in and who was refused
//
// Push is enabled (http.receivepack) in every repository NewRepo makes.
// The server listens on 127.0.0.1 and stops at the test's cleanup. Outside
// tests, NewHandler serves an existing directory of bare repositories with
// the same checks, and cmd/gitserver runs it on its own (make dev-up). It is a
// test tool: it does not do SSH, TLS, per-repository permissions or more
// than one account, and nothing in Kiln's product code refers to it.
//
// # Passing credentials to git
//
// A runner (or a workspace's clone step) must give git the token without
// putting it in the remote URL, in argv or in .git/config: any of those
// ends up in `ps`, in logs, in events or in the repository the agent works
// in. Git asks a credential helper for the password when the server answers
// 401, and the helper may read it from a file. So: keep the user name and
// the token as two files of a Kubernetes Secret mounted read-only, say at
// /var/run/kiln/git (keys `username` and `token`), and give git this
// configuration, which names only the files:
//
//	[credential "https://git.example.com"]
//		helper =
//		helper = "!f() { test \"$1\" = get || exit 0; printf 'username=%s\\npassword=%s\\n' \"$(cat /var/run/kiln/git/username)\" \"$(cat /var/run/kiln/git/token)\"; }; f"
//
// Those are the exact lines, in git-config syntax (inside the double quotes
// git turns \" into " and \\n into \n, which printf prints as a newline).
// The section is scoped to the repository host (scheme://host[:port]), so
// the token is never offered to another server; the empty `helper =` drops
// any helper configured before it (a `store` or `cache` helper would be told
// the token after a successful request and could write it down). The helper
// answers only git's `get`; for `store` and `erase` it does nothing, so a
// read-only mount is fine. Put the lines in a file that is not in the
// repository and point git at it with the environment variable
//
//	GIT_CONFIG_SYSTEM=/var/run/kiln/git/gitconfig
//
// (git 2.32 or later; the file can be a third key of the same Secret, or a
// ConfigMap since it holds no secret). The user's ~/.gitconfig and the
// clone's .git/config stay as they are: `git clone https://git.example.com/org/repo.git`
// then works with a plain URL, and `git config --list` in the clone shows
// the helper but never the token. The same holds for fetch and push.
// TestCredentialHelperFromFile runs exactly this configuration for clone,
// fetch and push. Do not also set GIT_CONFIG_NOSYSTEM, which would hide the
// file.
//
// The alternative is GIT_ASKPASS, a program git runs with the prompt
// ("Username for ...", "Password for ...") as its argument and whose
// output it takes as the answer:
//
//	#!/bin/sh
//	case "$1" in
//	Username*) cat /var/run/kiln/git/username ;;
//	*) cat /var/run/kiln/git/token ;;
//	esac
//
// with GIT_ASKPASS=<that script> and GIT_TERMINAL_PROMPT=0 in git's
// environment. It needs an executable file (a Secret key mounted with mode
// 0555 on a volume that allows exec), which is why the credential helper
// above is preferred. TestCloneWithAskPass shows it working.
//
// Keeping the token away from the agent is the pod's job, not git's: mount
// the Secret only into the containers that run git for Kiln (the clone
// init container, and a container the runner execs `git fetch`/`git push`
// in, sharing the workspace volume), never into the container the agent
// runs in, and never put the token in an environment variable of that
// container.
//
// For SSH remotes the same idea is a key file and a known_hosts file from
// the Secret (mounted with mode 0400: ssh refuses a key others can read),
// given by
//
//	[core]
//		sshCommand = ssh -i /var/run/kiln/git/ssh_private_key -o IdentitiesOnly=yes -o UserKnownHostsFile=/var/run/kiln/git/known_hosts -o StrictHostKeyChecking=yes
//
// (this package serves HTTP only and does not test the SSH form).
package gitserver
