package node

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

const (
	defaultTerminationMessagePath = "/dev/termination-log"
	maxTerminationMessage         = 4096
	fallbackLogLines              = 80
	fallbackLogBytes              = 2048
	crashBackoffBase              = 10 * time.Second
	crashBackoffMax               = 300 * time.Second
	crashBackoffReset             = 10 * time.Minute
	pullBackoffDisplay            = time.Second
	configRetryBase               = time.Second
	configRetryMax                = 10 * time.Second
	cfsPeriod                     = 100000 // µs
)

// container is the node's record of one container of a pod. Its fields are
// guarded by the pod worker's mutex.
type container struct {
	spec    corev1.Container
	init    bool
	sidecar bool // an init container with restartPolicy Always

	running        *corev1.ContainerStateRunning
	lastExit       *corev1.ContainerStateTerminated // most recent termination
	prevExit       *corev1.ContainerStateTerminated // termination before the current run
	waiting        corev1.ContainerStateWaiting     // why it is not running (when it is not)
	restartPending bool                             // exited and will be restarted
	restarts       int32
	crashes        int // exits that led to a restart, for the back-off
	pullFailures   int
	configFailures int
	pullFailedAt   time.Time
	nextTry        time.Time // do not start before

	id          string
	imageID     string
	attempts    int
	proc        *nsinit.Process
	pid         int
	env         []string
	dir         string
	cgroup      string // memory
	cpuCgroup   string
	logPaths    []string      // one per attempt; the last is current
	probeReady  bool          // the readiness probe passed (this run)
	startupOK   bool          // the startup probe passed (this run)
	postStarted bool          // the postStart hook finished (this run)
	stdin       *os.File      // the node's end of the container's stdin (spec.stdin)
	done        chan struct{} // closed when the current (or last) process ended
}

func newContainer(spec corev1.Container, init bool) *container {
	c := &container{spec: spec, init: init}
	c.sidecar = init && spec.RestartPolicy != nil && *spec.RestartPolicy == corev1.ContainerRestartPolicyAlways
	c.waiting = corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	return c
}

// neverRan reports whether no process was ever started for the container.
func (c *container) neverRan() bool { return c.attempts == 0 }

// succeeded reports whether the container has exited 0 and is not running.
func (c *container) succeeded() bool {
	return c.running == nil && c.lastExit != nil && c.lastExit.ExitCode == 0 && !c.restartPending
}

// shouldRestart applies a restart policy to the container's last exit.
func (c *container) shouldRestart(policy corev1.RestartPolicy) bool {
	if c.sidecar {
		return true
	}
	switch policy {
	case corev1.RestartPolicyAlways:
		return true
	case corev1.RestartPolicyOnFailure:
		return c.lastExit != nil && c.lastExit.ExitCode != 0
	}
	return false
}

// crashDelay is the kubelet's restart back-off: the first restart is
// immediate, then 10s doubling up to 5 minutes.
func (c *container) crashDelay() time.Duration {
	if c.lastExit != nil && c.lastExit.FinishedAt.Sub(c.lastExit.StartedAt.Time) > crashBackoffReset {
		c.crashes = 0
	}
	c.crashes++
	if c.crashes == 1 {
		return 0
	}
	d := crashBackoffBase << (c.crashes - 2)
	if d > crashBackoffMax || d <= 0 {
		d = crashBackoffMax
	}
	return d
}

func pullDelay(failures int) time.Duration {
	d := crashBackoffBase << max(failures-1, 0)
	if d > crashBackoffMax || d <= 0 {
		d = crashBackoffMax
	}
	return d
}

func configDelay(failures int) time.Duration {
	d := configRetryBase << max(failures-1, 0)
	if d > configRetryMax || d <= 0 {
		d = configRetryMax
	}
	return d
}

func (c *container) state() (state, last corev1.ContainerState) {
	switch {
	case c.running != nil:
		return corev1.ContainerState{Running: c.running.DeepCopy()}, terminatedState(c.prevExit)
	case c.lastExit != nil && !c.restartPending:
		return corev1.ContainerState{Terminated: c.lastExit.DeepCopy()}, terminatedState(c.prevExit)
	case c.lastExit != nil:
		w := c.waiting
		return corev1.ContainerState{Waiting: &w}, terminatedState(c.lastExit)
	default:
		w := c.waiting
		return corev1.ContainerState{Waiting: &w}, terminatedState(c.prevExit)
	}
}

func terminatedState(t *corev1.ContainerStateTerminated) corev1.ContainerState {
	if t == nil {
		return corev1.ContainerState{}
	}
	return corev1.ContainerState{Terminated: t.DeepCopy()}
}

func newContainerID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lookupImage maps an image reference to its host executable.
func (n *Node) lookupImage(image string) (string, bool) {
	if exe, ok := n.cfg.Images[image]; ok {
		return exe, true
	}
	name := imageName(image)
	if exe, ok := n.cfg.Images[name]; ok {
		return exe, true
	}
	exe, ok := n.cfg.Images[name+":latest"]
	return exe, ok
}

// imageName strips an image reference's tag and digest.
func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	slash := strings.LastIndexByte(ref, '/')
	if colon := strings.LastIndexByte(ref, ':'); colon > slash {
		ref = ref[:colon]
	}
	return ref
}

// fullReference expands a reference the way container runtimes do
// ("busybox" -> "docker.io/library/busybox:latest").
func fullReference(ref string) string {
	name := ref
	first, _, hasSlash := strings.Cut(ref, "/")
	switch {
	case !hasSlash:
		name = "docker.io/library/" + ref
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		name = "docker.io/" + ref
	}
	if !strings.Contains(name, "@") && imageName(name) == name {
		name += ":latest"
	}
	return name
}

func pullErrorMessage(image string) string {
	ref := fullReference(image)
	return fmt.Sprintf("Failed to pull image %q: rpc error: code = NotFound desc = failed to pull and unpack image %q: failed to resolve reference %q: %s: not found",
		image, ref, ref, ref)
}

// readTerminationMessage reads what the container wrote to its termination
// message file, or (with FallbackToLogsOnError and a failure) its log tail.
func readTerminationMessage(c *container, termFile, logPath string, exitCode int32) string {
	msg := readLimited(termFile, maxTerminationMessage)
	if msg == "" && exitCode != 0 && c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		msg = tailLog(logPath, fallbackLogLines, fallbackLogBytes)
	}
	return msg
}

func readLimited(path string, limit int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, limit)
	n, _ := f.ReadAt(buf, 0)
	return string(buf[:n])
}

func (n *Node) attemptDir(uid string, c *container, attempt int) string {
	return filepath.Join(n.podDir(uid), "containers", c.spec.Name, fmt.Sprint(attempt))
}

func (n *Node) logPath(uid string, c *container, attempt int) string {
	return filepath.Join(n.podDir(uid), "logs", c.spec.Name, fmt.Sprintf("%d.log", attempt))
}
