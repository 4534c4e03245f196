package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

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
	cgName := fmt.Sprintf("%s-%d", c.spec.Name, attempt)
	memory := map[string]string{}
	if q, ok := c.spec.Resources.Limits[corev1.ResourceMemory]; ok && q.Value() > 0 {
		memory["memory.limit_in_bytes"] = strconv.FormatInt(q.Value(), 10)
	}
	cg, err := n.cgroups.create(uid, cgName, memory)
	if err != nil {
		return configFailed(fmt.Errorf("creating memory cgroup: %w", err))
	}
	var cpuCg string
	if q, ok := c.spec.Resources.Limits[corev1.ResourceCPU]; ok && q.MilliValue() > 0 {
		// A CFS quota per 100ms period, as the kubelet sets for a CPU limit.
		quota := max(q.MilliValue()*cfsPeriod/1000, 1000)
		cpuCg, err = n.cpu.create(uid, cgName, map[string]string{
			"cpu.cfs_period_us": strconv.FormatInt(cfsPeriod, 10),
			"cpu.cfs_quota_us":  strconv.FormatInt(quota, 10),
		})
		if err != nil {
			n.cgroups.remove(cg)
			return configFailed(fmt.Errorf("creating cpu cgroup: %w", err))
		}
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
	for _, dir := range []string{cg, cpuCg} {
		if dir != "" {
			spec.Cgroups = append(spec.Cgroups, dir)
		}
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
	c.cpuCgroup = cpuCg
	c.env = env
	c.dir = cmpOr(c.spec.WorkingDir, "/")
	done := make(chan struct{})
	c.done = done
	started := metav1.Now()

	w.event(pod, c, corev1.EventTypeNormal, eventPulled, "Container image %q already present on machine", c.spec.Image)
	w.event(pod, c, corev1.EventTypeNormal, eventCreated, "Created container: %s", c.spec.Name)
	clog, stdout, stderr, err := startContainerLog(logPath)
	if err != nil {
		return configFailed(err)
	}
	var stdin *os.File // nil: /dev/null
	if c.spec.Stdin {
		if stdin, c.stdin, err = os.Pipe(); err != nil {
			stdout.Close()
			stderr.Close()
			return configFailed(err)
		}
	}
	proc, err := n.starter.Start(spec, stdinReader(stdin), stdout, stderr)
	stdout.Close() // the container has its own copies
	stderr.Close()
	if stdin != nil {
		stdin.Close()
	}
	if err != nil {
		if c.stdin != nil {
			c.stdin.Close()
			c.stdin = nil
		}
		w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: %v", err)
		c.lastExit = &corev1.ContainerStateTerminated{
			ExitCode: 128, Reason: "StartError", Message: err.Error(),
			StartedAt: started, FinishedAt: started, ContainerID: "kubebox://" + c.id,
		}
		n.cgroups.remove(cg)
		n.cpu.remove(cpuCg)
		close(done)
		return time.Time{}
	}
	// Running once the command is exec'd (after its mounts): see wait.
	c.proc = proc
	c.pid = proc.Cmd.Process.Pid
	go w.wait(c, proc, clog, done, cg, cpuCg, termFile, logPath, started)
	return time.Time{}
}

// stdinReader keeps a nil *os.File from becoming a non-nil io.Reader.
func stdinReader(f *os.File) io.Reader {
	if f == nil {
		return nil
	}
	return f
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
func (w *podWorker) wait(c *container, proc *nsinit.Process, clog *containerLog, done chan struct{}, cg, cpuCg, termFile, logPath string, started metav1.Time) {
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
	killCgroup(cpuCg, syscall.SIGKILL)
	clog.wait(2 * time.Second)

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
	if c.proc == proc && c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
	}
	t.ContainerID = "kubebox://" + c.id
	c.running = nil
	c.proc = nil
	c.lastExit = t
	w.mu.Unlock()
	// Before done: the node's stop waits for removals it knows about.
	w.n.cgroups.remove(cg)
	w.n.cpu.remove(cpuCg)
	close(done)
	w.signal()
}
