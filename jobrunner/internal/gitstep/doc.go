// Package gitstep is the runner's deterministic git work around the agent.
//
// Before the agent starts, Step.Prepare brings the workspace to the
// project branch's head (fetched when the project names a remote) with a
// clean working tree, keeping whatever an earlier build left — uncommitted
// files, commits not on the branch — on refs/kiln/leftovers/<that build's
// id>, and records the new build's id in the repository's configuration.
// Ignored files (dependency folders, caches) are kept in place.
//
// After the agent has run, Step.Run lists the files changed, commits them
// with the project's author and a message naming the build (with a
// Kiln-Build-Id trailer), and pushes the commit to the project's branch —
// never with force.
//
// It is built from pure pieces (ParseStatus, CommitCommand, PushCommand,
// ClassifyPush) joined by Step's methods, which execute git through a
// one-method Runner. LocalRunner runs git on this machine (tests, local
// use); the runner's Kubernetes exec implements the same interface to run it
// in the project pod.
//
// A private repository's Credentials (an HTTPS user name and token, or an
// SSH key and known_hosts) are given to the two commands that talk to the
// remote — Prepare's fetch and Run's push — and to no other: Credentials.Wrap
// runs such a command as `sh -c <fixed script> kiln-git git ...` with the
// secret on its stdin, so it is never in argv, the remote URL, .git/config,
// a CommandError or a PushError. The workspace's hooks and fsmonitor do not
// run for those commands (the agent may have written them).
//
// It does not clone, rebase or resolve conflicts: a push the remote rejects
// is reported, with git's message, and the local commit is kept (the next
// build's Prepare keeps it on that build's leftovers ref).
package gitstep
