// Package run is the jobrunner's pipeline for one build: read the Job's
// environment, fetch the RunnerTask, render the prompt (with the agent's
// limits), find the project pod, for a follow-up check with one exec that
// the earlier agent session is there (resume it, start a fresh one with the
// earlier build as context under fallback fresh, or fail with
// session_unavailable before anything is touched), bring its workspace to
// the branch head (what an earlier build left is kept on a ref), run the
// agent there, stream its output as ordered
// event batches, run the git step in the pod, report the BuildResult, and
// always leave a TerminationSummary in the pod's termination message.
//
// No process of an agent run outlives its build: the agent starts with
// KILN_AGENT_RUN=<build id> in its environment, which every process it
// starts inherits (Bash tool commands in sessions of their own included).
// Cancel, the deadline, and an API error no retry mends (the first
// api_retry of a 401, 403 or 400) stop it with a second exec (KillScript);
// when the runner itself is lost, the exec's stdin — held open for the
// whole run — ends, and the wrapper in the pod (AgentScript) stops the run;
// when the agent exits, whatever it left running is killed too.
//
// A managed project's repository credentials, mounted in the runner's own
// pod at KILN_GIT_CREDENTIALS, are read after the agent's settings and
// given to the workspace fetch and the push only, on the exec's stdin: the
// project pod — where the agent runs — never holds them in its spec or
// environment, and the agent's processes are gone before the push.
//
// A build that fails or is cancelled after its agent changed files (turn or
// budget limit, deadline, cancel, SIGTERM, agent error) has those changes
// committed to kiln/<build id> — never the project branch — and pushed
// there with auto_push (keep.go); after SIGTERM within what the grace
// period leaves before the report, without the push when too little is
// left. Nothing is committed of a build whose agent pushed itself. A build
// with a review branch commits and pushes to that branch instead of the
// project's, and a follow-up of a build with kept work starts from it, as
// uncommitted changes in the prepared workspace.
//
// The parts it joins live in sibling packages: client (dispatcher
// protocol), events (ordered batches), podexec (Kubernetes exec), agent
// (CLI adapters and stream parsing), prompt and gitstep. This package holds
// only the order of the stages and the cancellation rules.
package run
