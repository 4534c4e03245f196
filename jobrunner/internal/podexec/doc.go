// Package podexec runs commands in a container of a Kubernetes pod through
// the pods/exec API (client-go remotecommand): WebSocket first, falling
// back to SPDY when the upgrade is refused; never a TTY. Stdin is streamed
// and stdout/stderr are handed to the caller's writers as they arrive, so a
// reader sees output incrementally and without any line-length limit.
//
// Runner adapts an Executor to gitstep.Runner (argv executed directly, no
// shell); FindPod resolves a project's target (a pod name or a label
// selector) to a running pod and container.
//
// It does not know about agents, builds or the dispatcher.
package podexec
