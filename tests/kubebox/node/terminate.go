package node

import (
	"context"
	"os"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

// signalContainer signals the container's process group and whatever else is
// in its cgroup. Called with the pod worker's mutex held.
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

func (w *podWorker) cleanup() {
	w.n.status.forget(w.uid)
	if err := os.RemoveAll(w.n.podDir(string(w.uid))); err != nil {
		w.log.Warn("removing pod directory", "err", err)
	}
}
