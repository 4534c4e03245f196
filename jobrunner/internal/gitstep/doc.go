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
// Two other ways to commit leave the branch checked out alone.
// Step.CommitBranch commits the working tree as it is (ignored files aside)
// on top of HEAD to another branch through a temporary index — neither the
// working tree, nor the index, nor HEAD, nor the project's branch changes —
// and Step.PushBranch pushes that commit to the same branch of the remote,
// never with force. The runner uses them for a review branch (Options.
// ReviewBranch: the build's commit goes there, from the project branch's
// head, and is pushed there instead) and for kept work: a build that failed
// or was cancelled after its agent changed files has those changes
// committed to kiln/<build id>. Either way the workspace is left as the
// agent left it, and CommitBranch records that state (git config
// kiln.kept: its tree and the branch): the next build's Prepare, finding
// the working tree still in that state and the branch still there, resets
// it without keeping it a second time on a leftovers ref
// (Workspace.AlreadyKept). A state that changed since, or whose branch is
// gone, is kept on the leftovers ref as any other.
//
// Step.ApplyKept starts a follow-up from the kept work of the build it
// follows: right after Prepare it puts that commit's changes into the clean
// working tree as uncommitted changes on the project branch's head (the
// commit's tree when the head has not moved, else a three-way merge with
// `git merge-tree`), fetching the kept branch from the remote when the
// workspace lacks the commit. It refuses kept work that is gone or
// conflicts with the head, and then leaves the working tree clean.
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
