package node

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Event reasons, as the kubelet uses them.
const (
	eventPulled        = "Pulled"
	eventCreated       = "Created"
	eventStarted       = "Started"
	eventKilling       = "Killing"
	eventFailed        = "Failed"
	eventBackOff       = "BackOff"
	eventFailedMount   = "FailedMount"
	eventDeadline      = "DeadlineExceeded"
	eventFailedKillPod = "FailedKillPod"
)

// newRecorder records events the way the kubelet does (source "kubelet" on
// this host), through the client-go broadcaster that aggregates and
// rate-limits them.
func newRecorder(n *Node) (record.EventBroadcaster, record.EventRecorder) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: n.client.CoreV1().Events("")})
	r := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: n.cfg.Name})
	return b, r
}

// podRef refers to a pod, or to one of its containers when c is not nil.
func podRef(pod *corev1.Pod, c *container) *corev1.ObjectReference {
	ref := &corev1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
		UID: pod.UID, ResourceVersion: pod.ResourceVersion,
	}
	if c != nil {
		if c.init {
			ref.FieldPath = fmt.Sprintf("spec.initContainers{%s}", c.spec.Name)
		} else {
			ref.FieldPath = fmt.Sprintf("spec.containers{%s}", c.spec.Name)
		}
	}
	return ref
}

func (w *podWorker) event(pod *corev1.Pod, c *container, typ, reason, format string, args ...any) {
	if w.n.recorder == nil {
		return
	}
	w.n.recorder.Eventf(podRef(pod, c), typ, reason, format, args...)
}
