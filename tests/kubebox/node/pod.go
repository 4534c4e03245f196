package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

// podWorker runs one pod: it sets up the volumes, runs the init containers
// in order and then the containers, restarts them per the restart policy,
// and on deletion stops them and deletes the pod object. Everything it does
// is driven by events (pod updates, container exits) and timers.
type podWorker struct {
	n   *Node
	uid types.UID
	log *slog.Logger

	notify     chan struct{} // pod updated or a container changed
	removed    chan struct{} // the pod object is gone
	removeOnce sync.Once
	stopped    chan struct{} // the node is shutting down
	stopOnce   sync.Once
	statusMu   sync.Mutex // serializes status writes of this pod

	mu           sync.Mutex // guards everything below
	pod          *corev1.Pod
	startTime    metav1.Time
	volumesReady bool
	volumeTries  int
	tokenRefresh time.Time
	init         []*container
	ctrs         []*container
	phase        corev1.PodPhase // set once the pod is terminal
	reason       string
	message      string
	terminating  bool
}

func newPodWorker(n *Node, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		n:       n,
		uid:     pod.UID,
		log:     n.log.With("pod", pod.Namespace+"/"+pod.Name),
		notify:  make(chan struct{}, 1),
		removed: make(chan struct{}),
		stopped: make(chan struct{}),
		pod:     pod,
	}
	w.startTime = metav1.Now()
	if pod.Status.StartTime != nil {
		w.startTime = *pod.Status.StartTime
	}
	for _, c := range pod.Spec.InitContainers {
		w.init = append(w.init, newContainer(c, true))
	}
	for _, c := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, newContainer(c, false))
	}
	if len(w.init) > 0 {
		// Everything after the first init container waits for it.
		for _, c := range w.ctrs {
			c.waiting = corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		}
		for _, c := range w.init[1:] {
			c.waiting = corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		}
	}
	return w
}

func (w *podWorker) signal() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	w.signal()
}

func (w *podWorker) remove() { w.removeOnce.Do(func() { close(w.removed) }) }
func (w *podWorker) stop()   { w.stopOnce.Do(func() { close(w.stopped) }) }

func (w *podWorker) container(name string) *container {
	for _, c := range w.all() {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

func (w *podWorker) all() []*container {
	return append(append(make([]*container, 0, len(w.init)+len(w.ctrs)), w.init...), w.ctrs...)
}

func (w *podWorker) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-w.removed:
			w.killAll(0)
			w.cleanup()
			return
		case <-w.stopped:
			w.killAll(0)
			return
		default:
		}
		next := w.reconcile(ctx)
		w.n.status.enqueue(w.uid)
		var wake <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			wake = timer.C
		}
		select {
		case <-w.removed:
		case <-w.stopped:
		case <-w.notify:
		case <-wake:
		}
		timer.Stop()
	}
}

// reconcile moves the pod one step towards what its spec asks for and
// returns when it wants to be woken (zero: only on events).
func (w *podWorker) reconcile(ctx context.Context) time.Time {
	w.mu.Lock()
	pod := w.pod
	terminal := w.phase != ""
	terminating := w.terminating
	w.mu.Unlock()

	if pod.DeletionTimestamp != nil {
		if !terminating {
			w.mu.Lock()
			w.terminating = true
			w.mu.Unlock()
			w.terminate(ctx, pod)
		}
		return time.Time{}
	}
	if terminal {
		return time.Time{}
	}

	now := time.Now()
	var next time.Time
	wake := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}

	if ads := pod.Spec.ActiveDeadlineSeconds; ads != nil {
		deadline := w.startTime.Add(time.Duration(*ads) * time.Second)
		if !now.Before(deadline) {
			w.event(pod, nil, corev1.EventTypeNormal, eventDeadline, "Pod was active on the node longer than the specified deadline")
			w.killAll(gracePeriod(pod))
			w.mu.Lock()
			w.finish(corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
			w.mu.Unlock()
			return time.Time{}
		}
		wake(deadline)
	}

	w.mu.Lock()
	ready, refresh := w.volumesReady, w.tokenRefresh
	w.mu.Unlock()
	if !ready || (!refresh.IsZero() && !now.Before(refresh)) {
		refresh, err := w.n.setupVolumes(ctx, pod)
		w.mu.Lock()
		if err != nil {
			w.volumeTries++
			if w.volumeTries == 1 || w.volumeTries%10 == 0 {
				w.event(pod, nil, corev1.EventTypeWarning, eventFailedMount, "%v", err)
			}
			retry := now.Add(configDelay(w.volumeTries))
			if ready {
				// A failed refresh: keep running, try again later.
				w.tokenRefresh = retry
			}
			w.mu.Unlock()
			if w.volumeTries == 1 || w.volumeTries%10 == 0 {
				w.log.Info("volume setup failed", "err", err)
			}
			if !ready {
				wake(retry)
				return next
			}
		} else {
			w.volumesReady, w.volumeTries, w.tokenRefresh = true, 0, refresh
			w.mu.Unlock()
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	wake(w.tokenRefresh)
	policy := pod.Spec.RestartPolicy

	// Init containers, one at a time, in order. Sidecars start and keep running.
	for _, c := range w.init {
		if c.sidecar {
			if c.proc == nil {
				wake(w.startOrBackoff(ctx, pod, c, now, policy))
			}
			if c.restarts == 0 && !c.started() {
				return next // what follows waits for the sidecar's first start
			}
			continue
		}
		if c.succeeded() {
			continue
		}
		if c.proc != nil {
			return next // running, or about to
		}
		if c.lastExit != nil && !c.restartPending && !c.shouldRestart(policy) {
			w.finish(corev1.PodFailed, "", "")
			w.stopSidecars()
			return next
		}
		wake(w.startOrBackoff(ctx, pod, c, now, policy))
		return next
	}

	for _, c := range w.ctrs {
		if c.proc != nil {
			continue
		}
		if c.lastExit != nil && !c.restartPending && !c.shouldRestart(policy) {
			continue
		}
		wake(w.startOrBackoff(ctx, pod, c, now, policy))
	}

	if phase := w.containersPhase(); phase == corev1.PodSucceeded || phase == corev1.PodFailed {
		w.finish(phase, "", "")
		w.stopSidecars()
	}
	return next
}

// startOrBackoff starts c unless it is backing off; it returns when to try
// again. Called with w.mu held.
func (w *podWorker) startOrBackoff(ctx context.Context, pod *corev1.Pod, c *container, now time.Time, policy corev1.RestartPolicy) time.Time {
	if c.lastExit != nil && !c.restartPending {
		// Just exited and will be restarted: apply the back-off.
		c.restartPending = true
		c.nextTry = c.lastExit.FinishedAt.Add(c.crashDelay())
	}
	if now.Before(c.nextTry) {
		if c.waiting.Reason == "ErrImagePull" {
			flip := c.pullFailedAt.Add(pullBackoffDisplay)
			if now.Before(flip) {
				return flip
			}
			c.waiting = corev1.ContainerStateWaiting{
				Reason:  "ImagePullBackOff",
				Message: fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", c.spec.Image, pullErrorMessage(c.spec.Image)),
			}
			w.event(pod, c, corev1.EventTypeNormal, eventBackOff, "Back-off pulling image %q", c.spec.Image)
			w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: ImagePullBackOff")
		} else if c.restartPending && c.waiting.Reason != "CrashLoopBackOff" && c.waiting.Reason != "CreateContainerConfigError" {
			c.waiting = corev1.ContainerStateWaiting{
				Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
					c.nextTry.Sub(c.lastExit.FinishedAt.Time).Round(time.Second), c.spec.Name, pod.Name, pod.Namespace, pod.UID),
			}
			w.event(pod, c, corev1.EventTypeWarning, eventBackOff, "Back-off restarting failed container %s in pod %s_%s(%s)",
				c.spec.Name, pod.Name, pod.Namespace, pod.UID)
		}
		return c.nextTry
	}
	return w.start(ctx, pod, c, now)
}

// start starts a process for c. Called with w.mu held; returns when to retry
// if it could not start.
func (w *podWorker) start(ctx context.Context, pod *corev1.Pod, c *container, now time.Time) time.Time {
	n := w.n
	exe, ok := n.lookupImage(c.spec.Image)
	if !ok {
		c.pullFailures++
		c.pullFailedAt = now
		c.nextTry = now.Add(pullDelay(c.pullFailures))
		c.waiting = corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: pullErrorMessage(c.spec.Image)}
		w.event(pod, c, corev1.EventTypeWarning, eventFailed, "%s", pullErrorMessage(c.spec.Image))
		w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: ErrImagePull")
		return c.pullFailedAt.Add(pullBackoffDisplay)
	}
	c.pullFailures = 0
	c.imageID = "kubebox://" + exe

	configFailed := func(err error) time.Time {
		var ce *configError
		if !errors.As(err, &ce) {
			w.log.Warn("preparing container", "container", c.spec.Name, "err", err)
		}
		c.configFailures++
		c.nextTry = now.Add(configDelay(c.configFailures))
		c.waiting = corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}
		if c.configFailures == 1 || c.configFailures%10 == 0 {
			w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: %v", err)
		}
		return c.nextTry
	}
	env, err := n.containerEnv(ctx, pod, &c.spec)
	if err != nil {
		return configFailed(err)
	}
	mounts, err := n.containerMounts(pod, &c.spec)
	if err != nil {
		return configFailed(err)
	}
	c.configFailures = 0

	lookup := envMapping(env)
	var args []string
	var path string
	if len(c.spec.Command) > 0 {
		for _, a := range c.spec.Command {
			args = append(args, expand(a, lookup))
		}
		path = imageCommandPath(args[0], exe)
	} else {
		args = []string{exe}
		path = exe
	}
	for _, a := range c.spec.Args {
		args = append(args, expand(a, lookup))
	}

	uid := string(pod.UID)
	attempt := c.attempts
	adir := n.attemptDir(uid, c, attempt)
	logPath := n.logPath(uid, c, attempt)
	termFile := filepath.Join(adir, "termination-log")
	if err := prepareFiles(adir, logPath, termFile); err != nil {
		return configFailed(err)
	}
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return configFailed(err)
	}
	defer logFile.Close()
	var limit int64
	if q, ok := c.spec.Resources.Limits[corev1.ResourceMemory]; ok {
		limit = q.Value()
	}
	cg, err := n.cgroups.create(uid, fmt.Sprintf("%s-%d", c.spec.Name, attempt), limit)
	if err != nil {
		return configFailed(fmt.Errorf("creating cgroup: %w", err))
	}
	etc, err := n.podEtcFiles(pod)
	if err != nil {
		return configFailed(err)
	}
	for _, f := range etc {
		if !underMount(f.Target, mounts) {
			mounts = append(mounts, f)
		}
	}
	if wd := c.spec.WorkingDir; wd != "" && !underMount(wd, mounts) {
		if _, err := os.Stat(wd); os.IsNotExist(err) {
			// Not on the host (the "image"): give the container its own
			// empty directory there, as a fresh root filesystem would.
			src := filepath.Join(adir, "workingdir")
			if err := os.MkdirAll(src, 0o755); err != nil {
				return configFailed(err)
			}
			mounts = append(mounts, nsinit.Mount{Source: src, Target: filepath.Clean(wd)})
		}
	}
	spec := nsinit.Spec{
		Args:     args,
		Path:     path,
		Env:      env,
		Dir:      c.spec.WorkingDir,
		Hostname: podHostname(pod),
		Mounts: append(mounts, nsinit.Mount{
			Source: termFile,
			Target: cmpOr(c.spec.TerminationMessagePath, defaultTerminationMessagePath),
		}),
	}
	if cg != "" {
		spec.Cgroups = []string{cg}
	}

	c.attempts++
	c.logPaths = append(c.logPaths, logPath)
	if c.lastExit != nil {
		c.prevExit = c.lastExit
		c.lastExit = nil
		c.restarts++
	}
	c.restartPending = false
	c.waiting = corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	c.id = newContainerID()
	c.cgroup = cg
	c.env = env
	c.dir = cmpOr(c.spec.WorkingDir, "/")
	done := make(chan struct{})
	c.done = done
	started := metav1.Now()

	w.event(pod, c, corev1.EventTypeNormal, eventPulled, "Container image %q already present on machine", c.spec.Image)
	w.event(pod, c, corev1.EventTypeNormal, eventCreated, "Created container: %s", c.spec.Name)
	proc, err := n.starter.Start(spec, nil, logFile, logFile)
	if err != nil {
		w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: %v", err)
		c.lastExit = &corev1.ContainerStateTerminated{
			ExitCode: 128, Reason: "StartError", Message: err.Error(),
			StartedAt: started, FinishedAt: started, ContainerID: "kubebox://" + c.id,
		}
		close(done)
		n.cgroups.remove(cg)
		return time.Time{}
	}
	// Running once the command is exec'd (after its mounts): see wait.
	c.proc = proc
	c.pid = proc.Cmd.Process.Pid
	go w.wait(c, proc, done, cg, termFile, logPath, started)
	return time.Time{}
}

// podEtcFiles writes the pod's /etc/hosts (the host's, plus the pod's
// hostname) and /etc/hostname, as the kubelet manages them, and returns
// their mounts.
func (n *Node) podEtcFiles(pod *corev1.Pod) ([]nsinit.Mount, error) {
	dir := n.podDir(string(pod.UID))
	hostsFile, hostnameFile := filepath.Join(dir, "etc-hosts"), filepath.Join(dir, "etc-hostname")
	if _, err := os.Stat(hostnameFile); err != nil {
		hostname := podHostname(pod)
		hosts, _ := os.ReadFile("/etc/hosts")
		content := fmt.Sprintf("# Kubernetes-managed hosts file (kubebox: the host's, plus this pod).\n%s\n%s\t%s\n",
			strings.TrimRight(string(hosts), "\n"), podIP, hostname)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(hostsFile, []byte(content), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(hostnameFile, []byte(hostname+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	return []nsinit.Mount{{Source: hostsFile, Target: "/etc/hosts"}, {Source: hostnameFile, Target: "/etc/hostname"}}, nil
}

// imageCommandPath maps a command that names the image's own executable by
// its path inside the image (say /usr/local/bin/jobrunner for an image
// mapped to /tmp/build/jobrunner) to the mapped executable, when that path
// does not exist on the host. Otherwise the command is resolved as given.
func imageCommandPath(cmd, exe string) string {
	if !strings.Contains(cmd, "/") || filepath.Base(cmd) != filepath.Base(exe) {
		return ""
	}
	if _, err := os.Stat(cmd); err == nil {
		return ""
	}
	return exe
}

// underMount reports whether path is a mount target or inside one.
func underMount(path string, mounts []nsinit.Mount) bool {
	path = filepath.Clean(path)
	for _, m := range mounts {
		if path == m.Target || strings.HasPrefix(path, strings.TrimSuffix(m.Target, "/")+"/") {
			return true
		}
	}
	return false
}

func prepareFiles(adir, logPath, termFile string) error {
	if err := os.MkdirAll(adir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(termFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		return err
	}
	return f.Close()
}

// wait records a container process's end.
func (w *podWorker) wait(c *container, proc *nsinit.Process, done chan struct{}, cg, termFile, logPath string, started metav1.Time) {
	startErr := proc.StartError()
	if startErr == nil {
		started = metav1.Now()
		w.mu.Lock()
		if c.proc == proc {
			c.running = &corev1.ContainerStateRunning{StartedAt: started}
			c.postStarted = c.spec.Lifecycle == nil || c.spec.Lifecycle.PostStart == nil
			w.event(w.pod, c, corev1.EventTypeNormal, eventStarted, "Started container %s", c.spec.Name)
			if c.postStarted {
				w.startProbes(c, proc, done)
			}
		}
		postStart := !c.postStarted
		w.mu.Unlock()
		w.signal()
		if postStart {
			w.postStart(c, proc, done)
		}
	}
	_ = proc.Cmd.Wait()
	finished := metav1.Now()
	pid := proc.Cmd.Process.Pid
	// Like a container's init dying, the end of the main process ends the
	// rest of the container.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	killCgroup(cg, syscall.SIGKILL)

	t := &corev1.ContainerStateTerminated{StartedAt: started, FinishedAt: finished}
	ws, _ := proc.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		t.Signal = int32(ws.Signal())
		t.ExitCode = 128 + int32(ws.Signal())
	default:
		t.ExitCode = int32(ws.ExitStatus())
	}
	switch {
	case startErr != nil:
		t.ExitCode = 128
		t.Reason = "StartError"
		t.Message = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: " + startErr.Error() + ": unknown"
	case oomKilled(cg):
		t.Reason = "OOMKilled"
		t.ExitCode = 137
	case t.ExitCode == 0:
		t.Reason = "Completed"
	default:
		t.Reason = "Error"
	}
	if startErr == nil {
		t.Message = readTerminationMessage(c, termFile, logPath, t.ExitCode)
	}

	w.mu.Lock()
	if startErr != nil {
		w.event(w.pod, c, corev1.EventTypeWarning, eventFailed, "Error: %s", t.Message)
	}
	t.ContainerID = "kubebox://" + c.id
	c.running = nil
	c.proc = nil
	c.lastExit = t
	w.mu.Unlock()
	close(done)
	w.n.cgroups.remove(cg)
	w.signal()
}

func signalContainer(c *container, sig syscall.Signal) {
	if c.proc == nil {
		return
	}
	_ = syscall.Kill(-c.pid, sig)
	killCgroup(c.cgroup, sig)
}

// killAll stops every running container: SIGTERM, up to grace for them to
// exit, then SIGKILL.
func (w *podWorker) killAll(grace time.Duration) {
	w.mu.Lock()
	var dones []chan struct{}
	hookCtx, cancelHooks := context.WithTimeout(context.Background(), grace)
	defer cancelHooks()
	for _, c := range w.all() {
		if c.proc != nil {
			if grace > 0 {
				w.event(w.pod, c, corev1.EventTypeNormal, eventKilling, "Stopping container %s", c.spec.Name)
				if c.running != nil && c.spec.Lifecycle != nil && c.spec.Lifecycle.PreStop != nil {
					// The preStop hook runs first, within the grace period.
					go func(c *container, proc *nsinit.Process, pod *corev1.Pod) {
						if err := w.runHook(hookCtx, c, c.spec.Lifecycle.PreStop); err != nil {
							w.event(pod, c, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
						}
						w.mu.Lock()
						if c.proc == proc {
							signalContainer(c, syscall.SIGTERM)
						}
						w.mu.Unlock()
					}(c, c.proc, w.pod)
				} else {
					signalContainer(c, syscall.SIGTERM)
				}
			} else {
				signalContainer(c, syscall.SIGKILL)
			}
			dones = append(dones, c.done)
		}
	}
	w.mu.Unlock()
	if len(dones) == 0 {
		return
	}
	if grace > 0 {
		deadline := time.NewTimer(grace)
		defer deadline.Stop()
	wait:
		for _, d := range dones {
			select {
			case <-d:
			case <-deadline.C:
				break wait
			case <-w.removed:
				break wait
			case <-w.stopped:
				break wait
			}
		}
		w.mu.Lock()
		for _, c := range w.all() {
			signalContainer(c, syscall.SIGKILL)
		}
		w.mu.Unlock()
	}
	for _, d := range dones {
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			w.log.Warn("container did not exit after SIGKILL")
			return
		}
	}
}

// terminate handles a graceful deletion: stop the containers within the
// grace period, write the final status, then delete the pod object.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod) {
	w.killAll(gracePeriod(pod))
	w.mu.Lock()
	if w.phase == "" {
		phase := corev1.PodSucceeded
		for _, c := range w.all() {
			if !c.sidecar && !c.succeeded() {
				phase = corev1.PodFailed
			}
		}
		w.finish(phase, "", "")
	}
	w.mu.Unlock()
	if err := w.n.status.syncNow(ctx, w.uid); err != nil && ctx.Err() == nil {
		w.log.Warn("writing final pod status", "err", err)
	}
	delay := 100 * time.Millisecond
	for {
		err := w.n.deletePod(ctx, pod)
		if err == nil {
			return
		}
		w.log.Warn("finishing pod deletion", "err", err)
		select {
		case <-time.After(delay):
		case <-w.removed:
			return
		case <-w.stopped:
			return
		case <-ctx.Done():
			return
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func gracePeriod(pod *corev1.Pod) time.Duration {
	s := ptr.Deref(pod.DeletionGracePeriodSeconds, ptr.Deref(pod.Spec.TerminationGracePeriodSeconds, 30))
	return time.Duration(s) * time.Second
}

// stopSidecars ends the sidecars of a finished pod. Called with w.mu held.
func (w *podWorker) stopSidecars() {
	for _, c := range w.init {
		if c.sidecar && c.proc != nil {
			signalContainer(c, syscall.SIGTERM)
		}
	}
}

// finish marks the pod terminal. Called with w.mu held.
func (w *podWorker) finish(phase corev1.PodPhase, reason, message string) {
	if w.phase != "" {
		return
	}
	w.phase, w.reason, w.message = phase, reason, message
}

// containersPhase is the kubelet's phase rule over the app containers.
// Called with w.mu held.
func (w *podWorker) containersPhase() corev1.PodPhase {
	var running, waiting, stopped, succeeded int
	for _, c := range w.ctrs {
		switch {
		case c.running != nil:
			running++
		case c.proc != nil && c.prevExit != nil: // restarting
			stopped++
		case c.lastExit != nil:
			stopped++
			if c.lastExit.ExitCode == 0 && !c.restartPending {
				succeeded++
			}
		case c.prevExit != nil && c.restartPending:
			stopped++
		default:
			waiting++
		}
	}
	policy := w.pod.Spec.RestartPolicy
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		if policy == corev1.RestartPolicyAlways {
			return corev1.PodRunning
		}
		if stopped == succeeded {
			return corev1.PodSucceeded
		}
		if policy == corev1.RestartPolicyNever {
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// initDone reports whether every init container has finished (or, for a
// sidecar, started). Called with w.mu held.
func (w *podWorker) initDone() bool {
	for _, c := range w.init {
		if c.sidecar {
			if c.neverRan() {
				return false
			}
			continue
		}
		if !c.succeeded() {
			return false
		}
	}
	return true
}

func (w *podWorker) cleanup() {
	w.n.status.forget(w.uid)
	if err := os.RemoveAll(w.n.podDir(string(w.uid))); err != nil {
		w.log.Warn("removing pod directory", "err", err)
	}
}
