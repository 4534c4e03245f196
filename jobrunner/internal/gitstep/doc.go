// Package gitstep is the runner's deterministic git step: after the agent
// has run, it lists the files changed, commits them with the project's
// author and a message naming the build (with a Kiln-Build-Id trailer), and
// pushes the commit to the project's branch — never with force.
//
// It is built from pure pieces (ParseStatus, CommitCommand, PushCommand,
// ClassifyPush) joined by Step.Run, which executes git through a one-method
// Runner. LocalRunner runs git on this machine (tests, local use); the
// runner's Kubernetes exec implements the same interface to run it in the
// project pod.
//
// It does not clone, fetch, rebase or resolve conflicts: a push the remote
// rejects is reported, with git's message, and the local commit is kept.
package gitstep
