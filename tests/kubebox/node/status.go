package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
)

// statusManager writes pod statuses: workers mark a pod dirty, a few
// goroutines coalesce the changes and patch pods/status, as the kubelet's
// status manager does.
type statusManager struct {
	n     *Node
	queue workqueue.TypedRateLimitingInterface[types.UID]

	mu   sync.Mutex
	sent map[types.UID]*corev1.PodStatus // last status written
}

func newStatusManager(n *Node) *statusManager {
	return &statusManager{
		n: n,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "kubebox-pod-status"}),
		sent: map[types.UID]*corev1.PodStatus{},
	}
}

func (s *statusManager) enqueue(uid types.UID) { s.queue.Add(uid) }

func (s *statusManager) forget(uid types.UID) {
	s.mu.Lock()
	delete(s.sent, uid)
	s.mu.Unlock()
}

func (s *statusManager) run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				uid, quit := s.queue.Get()
				if quit {
					return
				}
				if err := s.sync(ctx, uid); err != nil && ctx.Err() == nil {
					s.n.log.Debug("writing pod status", "uid", uid, "err", err)
					s.queue.AddRateLimited(uid)
				} else {
					s.queue.Forget(uid)
				}
				s.queue.Done(uid)
			}
		})
	}
	<-ctx.Done()
	s.queue.ShutDown()
	wg.Wait()
}

// syncNow writes the pod's status before returning.
func (s *statusManager) syncNow(ctx context.Context, uid types.UID) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = s.sync(ctx, uid); err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(i+1) * 100 * time.Millisecond)
	}
	return err
}

func (s *statusManager) sync(ctx context.Context, uid types.UID) error {
	w := s.n.worker(uid)
	if w == nil {
		return nil
	}
	w.statusMu.Lock()
	defer w.statusMu.Unlock()
	pod, status := w.podStatus()
	s.mu.Lock()
	last := s.sent[uid]
	s.mu.Unlock()
	if last != nil && apiequality.Semantic.DeepEqual(*last, status) {
		return nil
	}
	oldJSON, err := json.Marshal(corev1.Pod{Status: pod.Status})
	if err != nil {
		return err
	}
	newJSON, err := json.Marshal(corev1.Pod{Status: status})
	if err != nil {
		return err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Pod{})
	if err != nil {
		return fmt.Errorf("computing status patch: %w", err)
	}
	if string(patch) != "{}" {
		// The uid makes the patch fail on a new pod of the same name.
		patch = append([]byte(fmt.Sprintf(`{"metadata":{"uid":%q},`, uid)), patch[1:]...)
		_, err = s.n.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("patching status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}
	s.mu.Lock()
	if s.n.worker(uid) != nil {
		s.sent[uid] = &status
	}
	s.mu.Unlock()
	return nil
}

// podStatus returns the latest pod object and the status the node reports
// for it.
func (w *podWorker) podStatus() (*corev1.Pod, corev1.PodStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pod := w.pod
	st := *pod.Status.DeepCopy()
	now := metav1.Now()

	initDone := w.initDone()
	phase := w.phase
	if phase == "" {
		phase = corev1.PodPending
		if initDone {
			phase = w.containersPhase()
		}
	}
	st.Phase = phase
	st.ObservedGeneration = pod.Generation
	st.Reason, st.Message = w.reason, w.message
	st.HostIP = podIP
	st.HostIPs = []corev1.HostIP{{IP: podIP}}
	st.PodIP = podIP
	st.PodIPs = []corev1.PodIP{{IP: podIP}}
	st.StartTime = w.startTime.DeepCopy()

	st.InitContainerStatuses = nil
	for _, c := range w.init {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status())
	}
	st.ContainerStatuses = nil
	for _, c := range w.ctrs {
		st.ContainerStatuses = append(st.ContainerStatuses, c.status())
	}

	terminal := phase == corev1.PodSucceeded || phase == corev1.PodFailed
	var notInit, notReady []string
	for _, c := range w.init {
		if (c.sidecar && c.neverRan()) || (!c.sidecar && !c.succeeded()) {
			notInit = append(notInit, c.spec.Name)
		}
	}
	for _, c := range w.ctrs {
		if !c.ready() {
			notReady = append(notReady, c.spec.Name)
		}
	}
	for _, c := range w.init {
		if c.sidecar && !c.ready() {
			notReady = append(notReady, c.spec.Name)
		}
	}
	cond := func(t corev1.PodConditionType, ok bool, reason, message string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionTrue}
		if !ok {
			c.Status, c.Reason, c.Message = corev1.ConditionFalse, reason, message
		}
		return c
	}
	readyReason, readyMessage := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
	if terminal {
		readyReason, readyMessage = "PodCompleted", ""
	}
	initReason, initMessage := "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " "))
	if terminal && len(notInit) == 0 {
		initReason, initMessage = "PodCompleted", ""
	}
	own := []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, w.volumesReady && !terminal, "", ""),
		cond(corev1.PodInitialized, len(notInit) == 0, initReason, initMessage),
		cond(corev1.ContainersReady, len(notReady) == 0 && !terminal, readyReason, readyMessage),
		cond(corev1.PodReady, len(notReady) == 0 && !terminal, readyReason, readyMessage),
	}
	if !hasCondition(st.Conditions, corev1.PodScheduled) {
		own = append(own, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue})
	}
	for _, c := range own {
		c.ObservedGeneration = pod.Generation
		st.Conditions = setCondition(st.Conditions, c, now)
	}
	return pod, st
}

func hasCondition(conds []corev1.PodCondition, t corev1.PodConditionType) bool {
	for _, c := range conds {
		if c.Type == t {
			return true
		}
	}
	return false
}

// setCondition replaces the condition of c's type, keeping its transition
// time when its status did not change.
func setCondition(conds []corev1.PodCondition, c corev1.PodCondition, now metav1.Time) []corev1.PodCondition {
	for i := range conds {
		if conds[i].Type != c.Type {
			continue
		}
		c.LastTransitionTime = now
		if conds[i].Status == c.Status {
			c.LastTransitionTime = conds[i].LastTransitionTime
		}
		conds[i] = c
		return conds
	}
	c.LastTransitionTime = now
	return append(conds, c)
}

// status is the container's ContainerStatus. Called with the pod worker's
// mutex held.
func (c *container) status() corev1.ContainerStatus {
	state, last := c.state()
	cs := corev1.ContainerStatus{
		Name:                 c.spec.Name,
		State:                state,
		LastTerminationState: last,
		RestartCount:         c.restarts,
		Image:                c.spec.Image,
		ImageID:              c.imageID,
		Started:              ptr.To(c.started()),
	}
	if c.attempts > 0 {
		cs.ContainerID = "kubebox://" + c.id
	}
	if c.init && !c.sidecar {
		cs.Ready = c.succeeded()
	} else {
		cs.Ready = c.ready()
	}
	return cs
}
