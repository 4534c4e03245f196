package watcher

import (
	"testing"

	"github.com/stretchr/testify/assert"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The informers' transforms keep what Decide and the index read of a Job
// and a pod — metadata, the deadline, the status, the containers' names and
// memory limits — and drop the rest, which would otherwise be held for
// every finished build until its Job's TTL.
func TestTrimKeepsWhatDecideReads(t *testing.T) {
	deadline := int64(600)
	meta := metav1.ObjectMeta{Name: "kiln-build-x", Labels: map[string]string{"kiln.dev/build-id": "x"},
		Annotations: map[string]string{"kiln.dev/build-id": "x"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kiln"}}}
	ctr := corev1.Container{Name: "runner", Env: []corev1.EnvVar{{Name: "K", Value: "v"}},
		VolumeMounts: []corev1.VolumeMount{{Name: "token", MountPath: "/t"}},
		Resources:    corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}}
	job := &batchv1.Job{ObjectMeta: meta, Spec: batchv1.JobSpec{ActiveDeadlineSeconds: &deadline,
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{ctr}}}},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}}
	out, err := trimJob(job)
	assert.NoError(t, err)
	j := out.(*batchv1.Job)
	assert.Empty(t, j.ManagedFields)
	assert.Empty(t, j.Spec.Template.Spec.Containers)
	assert.Equal(t, int64(600), *j.Spec.ActiveDeadlineSeconds)
	assert.True(t, finished(j))
	assert.Equal(t, "x", j.Labels["kiln.dev/build-id"])

	pod := &corev1.Pod{ObjectMeta: meta, Spec: corev1.PodSpec{Containers: []corev1.Container{ctr},
		Volumes: []corev1.Volume{{Name: "token"}}}, Status: corev1.PodStatus{Phase: corev1.PodFailed}}
	out, err = trimPod(pod)
	assert.NoError(t, err)
	p := out.(*corev1.Pod)
	assert.Empty(t, p.ManagedFields)
	assert.Empty(t, p.Spec.Volumes)
	assert.Empty(t, p.Spec.Containers[0].Env)
	assert.Equal(t, "256Mi", memoryLimit(p, "runner"))
	assert.Equal(t, corev1.PodFailed, p.Status.Phase)
	keys, err := buildOfObject(p)
	assert.NoError(t, err)
	assert.Equal(t, []string{"x"}, keys)
}
