package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

func (w *podWorker) stop() { w.stopOnce.Do(func() { close(w.stopped) }) }

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
