package workspace

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kilnbuild/kiln/schema"
)

// CloneError: the clone init container exited non-zero. Message is the tail
// of what git printed (its stderr, through terminationMessagePolicy
// FallbackToLogsOnError), e.g. "fatal: Authentication failed for '<url>'".
// It never holds a credential (the URL has none, and any credential text is
// redacted).
type CloneError struct {
	ExitCode int32
	Message  string
}

func (e *CloneError) Error() string {
	return fmt.Sprintf("cloning the repository failed (exit %d): %s", e.ExitCode, e.Message)
}

// PodError: the workspace pod cannot start or its main container failed,
// for a reason other than the clone: Reason is the kubelet's
// (ErrImagePull, ImagePullBackOff, InvalidImageName,
// CreateContainerConfigError, CrashLoopBackOff, Error...). Image pull
// errors may pass; the caller decides how long to wait.
type PodError struct {
	Container string
	Reason    string
	Message   string
}

func (e *PodError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("workspace container %s: %s", e.Container, e.Reason)
	}
	return fmt.Sprintf("workspace container %s: %s: %s", e.Container, e.Reason, e.Message)
}

// waitingFailures are waiting reasons that report a container that cannot
// start.
var waitingFailures = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true,
}

// CheckWorkspace reads the workspace pod: ready when the main container is
// Ready; a *CloneError when the clone init container terminated non-zero; a
// *PodError when a container cannot start or the main one failed. When not
// ready yet it watches the pod for up to wait before answering (false, nil),
// so a caller can block a few seconds without polling.
func (m *Manager) CheckWorkspace(ctx context.Context, s Spec, wait time.Duration) (bool, error) {
	name := PodName(s)
	pods := m.client.CoreV1().Pods(s.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return false, fmt.Errorf("reading pod %s/%s: %w", s.Namespace, name, err)
	}
	if len(list.Items) == 1 {
		if ready, err := m.podState(s, &list.Items[0]); ready || err != nil {
			return ready, err
		}
	}
	if wait <= 0 {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	w, err := pods.Watch(wctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
	if err != nil {
		if wctx.Err() != nil && ctx.Err() == nil {
			return false, nil
		}
		return false, fmt.Errorf("watching pod %s/%s: %w", s.Namespace, name, err)
	}
	defer w.Stop()
	for {
		select {
		case <-wctx.Done():
			return false, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return false, ctx.Err()
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if pod, ok := ev.Object.(*corev1.Pod); ok {
					if ready, err := m.podState(s, pod); ready || err != nil {
						return ready, err
					}
				}
			case watch.Error:
				if st := apierrors.FromObject(ev.Object); apierrors.IsResourceExpired(st) || apierrors.IsGone(st) {
					return false, nil // the caller comes back
				} else {
					return false, fmt.Errorf("watching pod %s/%s: %w", s.Namespace, name, st)
				}
			}
		}
	}
}

// podState is ready, or what failed.
func (m *Manager) podState(s Spec, pod *corev1.Pod) (bool, error) {
	if !ours(s, pod) {
		return false, notOurs("pod", pod.Namespace, pod.Name)
	}
	if pod.DeletionTimestamp != nil {
		return false, nil
	}
	for _, st := range pod.Status.InitContainerStatuses {
		if st.Name != CloneContainerName {
			continue
		}
		for _, t := range []*corev1.ContainerStateTerminated{st.State.Terminated, st.LastTerminationState.Terminated} {
			if t != nil && t.ExitCode != 0 {
				return false, &CloneError{ExitCode: t.ExitCode, Message: redact(s.Credentials, t.Message)}
			}
		}
		if w := st.State.Waiting; w != nil && waitingFailures[w.Reason] {
			return false, &PodError{Container: st.Name, Reason: w.Reason, Message: redact(s.Credentials, w.Message)}
		}
	}
	for _, st := range pod.Status.ContainerStatuses {
		if st.Name != ContainerName {
			continue
		}
		if st.Ready {
			return true, nil
		}
		if w := st.State.Waiting; w != nil && (waitingFailures[w.Reason] || w.Reason == "CrashLoopBackOff") {
			return false, &PodError{Container: st.Name, Reason: w.Reason, Message: redact(s.Credentials, w.Message)}
		}
		if t := st.State.Terminated; t != nil {
			return false, &PodError{Container: st.Name, Reason: t.Reason, Message: redact(s.Credentials, t.Message)}
		}
	}
	if pod.Status.Phase == corev1.PodFailed {
		return false, &PodError{Container: ContainerName, Reason: pod.Status.Reason, Message: redact(s.Credentials, pod.Status.Message)}
	}
	return false, nil
}

// redact removes any credential text from msg (git never prints it; this
// is a second line of defence) and trims it.
func redact(c *schema.Credentials, msg string) string {
	if c != nil {
		for _, secret := range []string{c.Token, c.SSHPrivateKey} {
			if secret = strings.TrimSpace(secret); secret != "" {
				msg = strings.ReplaceAll(msg, secret, "[redacted]")
			}
		}
	}
	return strings.TrimSpace(msg)
}
