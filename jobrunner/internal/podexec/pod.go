package podexec

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrNoPod: no running pod matches the target.
var ErrNoPod = errors.New("no running pod")

// Target is where to look for the pod: a name, or a label selector.
type Target struct {
	Namespace string
	// PodName names the pod; when empty, PodSelector selects it.
	PodName     string
	PodSelector string
	// Container names the container; empty means the pod's first container.
	Container string
}

// FindPod returns the container to run in: the named pod, or the oldest
// running, ready pod the selector matches (pods being deleted are skipped).
// It waits up to wait for such a pod to appear (a project pod restarting),
// checking every second. A selector needs `list` on pods; a name only `get`.
func FindPod(ctx context.Context, client kubernetes.Interface, t Target, wait time.Duration) (Container, error) {
	if t.Namespace == "" {
		return Container{}, errors.New("target: namespace: required")
	}
	if t.PodName == "" && t.PodSelector == "" {
		return Container{}, errors.New("target: pod_name or pod_selector: required")
	}
	deadline := time.Now().Add(wait)
	for {
		c, err := findOnce(ctx, client, t)
		if err == nil || !errors.Is(err, ErrNoPod) || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return Container{}, errors.Join(err, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func findOnce(ctx context.Context, client kubernetes.Interface, t Target) (Container, error) {
	var pod *corev1.Pod
	if t.PodName != "" {
		p, err := client.CoreV1().Pods(t.Namespace).Get(ctx, t.PodName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return Container{}, fmt.Errorf("pod %s/%s: %w (not found)", t.Namespace, t.PodName, ErrNoPod)
		}
		if err != nil {
			return Container{}, fmt.Errorf("getting pod %s/%s: %w", t.Namespace, t.PodName, err)
		}
		if !usable(p) {
			return Container{}, fmt.Errorf("pod %s/%s is %s: %w", t.Namespace, t.PodName, p.Status.Phase, ErrNoPod)
		}
		pod = p
	} else {
		list, err := client.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: t.PodSelector})
		if err != nil {
			return Container{}, fmt.Errorf("listing pods %q in %s: %w", t.PodSelector, t.Namespace, err)
		}
		var cands []*corev1.Pod
		for i := range list.Items {
			if usable(&list.Items[i]) {
				cands = append(cands, &list.Items[i])
			}
		}
		if len(cands) == 0 {
			return Container{}, fmt.Errorf("pods %q in %s: %w (%d matched)", t.PodSelector, t.Namespace, ErrNoPod, len(list.Items))
		}
		slices.SortFunc(cands, func(a, b *corev1.Pod) int {
			if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
				return c
			}
			return strings.Compare(a.Name, b.Name)
		})
		pod = cands[0]
	}
	name := t.Container
	if name == "" {
		name = pod.Spec.Containers[0].Name
	} else if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == name }) {
		return Container{}, fmt.Errorf("pod %s/%s has no container %q", pod.Namespace, pod.Name, name)
	}
	return Container{Namespace: pod.Namespace, Pod: pod.Name, Container: name}, nil
}

// usable: running, not being deleted, and ready when it reports readiness.
func usable(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || len(p.Spec.Containers) == 0 {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return true
}
