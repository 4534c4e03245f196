// Package run is the jobrunner's pipeline for one build: read the Job's
// environment, fetch the RunnerTask, render the prompt, find the project
// pod, run the agent there under its own session (so it can be killed as a
// process group), stream its output as ordered event batches, run the git
// step in the pod, report the BuildResult, and always leave a
// TerminationSummary in the pod's termination message.
//
// The parts it joins live in sibling packages: client (dispatcher
// protocol), events (ordered batches), podexec (Kubernetes exec), agent
// (CLI adapters and stream parsing), prompt and gitstep. This package holds
// only the order of the stages and the cancellation rules.
package run
