package watcher_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/watcher"
	"github.com/kilnbuild/kiln/schema"
)

// now is the fixed time every Decide case is judged at.
var now = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

var timeouts = watcher.Timeouts{ImagePull: 2 * time.Minute, Unschedulable: 5 * time.Minute}

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

// build is an audit row in status s; finishedAgo sets FinishedAt.
func build(s schema.Status, finishedAgo ...time.Duration) *store.Build {
	b := &store.Build{Build: schema.Build{ID: "b1", Status: s}}
	if len(finishedAgo) > 0 {
		b.FinishedAt = ptr.To(now.Add(-finishedAgo[0]))
	}
	return b
}

// job is a build's Job created createdAgo, changed by opts.
func job(createdAgo time.Duration, opts ...func(*batchv1.Job)) *batchv1.Job {
	j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "kiln-build-b1", CreationTimestamp: ago(createdAgo)},
		Spec: batchv1.JobSpec{ActiveDeadlineSeconds: ptr.To[int64](3600)}}
	for _, o := range opts {
		o(j)
	}
	return j
}

func deleting(j *batchv1.Job) { j.DeletionTimestamp = ptr.To(ago(time.Second)) }

func jobCondition(t batchv1.JobConditionType, reason, msg string) func(*batchv1.Job) {
	return func(j *batchv1.Job) {
		j.Status.Conditions = append(j.Status.Conditions,
			batchv1.JobCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: msg})
	}
}

var (
	complete = jobCondition(batchv1.JobComplete, "", "")
	deadline = jobCondition(batchv1.JobFailed, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline")
	backoff  = jobCondition(batchv1.JobFailed, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
)

// pod is a pod of the build's Job created createdAgo, in phase, changed by opts.
func pod(createdAgo time.Duration, phase corev1.PodPhase, opts ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kiln-build-b1-x7k2p", CreationTimestamp: ago(createdAgo)},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "jobrunner", Image: "kilnbuild/kiln-jobrunner:1"}}},
		Status: corev1.PodStatus{Phase: phase}}
	for _, o := range opts {
		o(p)
	}
	return p
}

func terminated(reason string, code int32, msg string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "jobrunner",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code, Message: msg}}})
	}
}

func running(p *corev1.Pod) {
	p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "jobrunner",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
}

func waiting(reason, msg string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "jobrunner",
			Image: "kilnbuild/kiln-jobrunner:bad", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}})
	}
}

func initWaiting(reason, msg string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, corev1.ContainerStatus{Name: "init",
			Image: "busybox:nope", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}})
	}
}

func unschedulable(sinceAgo time.Duration, msg string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: msg, LastTransitionTime: ago(sinceAgo)})
	}
}

func memoryLimit(q string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(q)}
	}
}

func pods(ps ...*corev1.Pod) []*corev1.Pod { return ps }

func fail(r schema.Reason, msg string) watcher.Decision {
	return watcher.Decision{Action: watcher.ActFail, Reason: r, Message: msg}
}

func failAndDelete(r schema.Reason, msg string) watcher.Decision {
	return watcher.Decision{Action: watcher.ActFail, Reason: r, Message: msg, DeleteJob: true}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	del := watcher.Decision{Action: watcher.ActDeleteJob}
	lost := "runner exited without a result"
	const summary = `{"kiln":1,"success":false,"error":"the remote refused the push","reason":"push_rejected","commit_sha":"abc123","files_changed":2,"duration_ms":4200,"reported":false}`
	long := strings.Repeat("panic: something broke\n", 100)

	for _, tc := range []struct {
		name string
		o    watcher.Observed
		want watcher.Decision
	}{
		// No audit row: the Job is not Kiln's to keep.
		{name: "no row, no Job", o: watcher.Observed{}, want: watcher.Decision{}},
		{name: "no row, a Job", o: watcher.Observed{Job: job(time.Minute)}, want: del},
		{name: "no row, a Job being deleted", o: watcher.Observed{Job: job(time.Minute, deleting)}, want: watcher.Decision{}},

		// Terminal builds: their Jobs go, after a grace unless cancelled.
		{name: "completed, Job active, within the grace",
			o:    watcher.Observed{Build: build(schema.StatusCompleted, 10*time.Second), Job: job(time.Hour)},
			want: watcher.Decision{After: 50 * time.Second}},
		{name: "failed, Job active, just within the grace",
			o:    watcher.Observed{Build: build(schema.StatusFailed, time.Minute-time.Millisecond), Job: job(time.Hour)},
			want: watcher.Decision{After: time.Millisecond}},
		{name: "completed, Job active, grace over",
			o: watcher.Observed{Build: build(schema.StatusCompleted, time.Minute), Job: job(time.Hour)}, want: del},
		{name: "failed, Job active long after",
			o: watcher.Observed{Build: build(schema.StatusFailed, time.Hour), Job: job(2 * time.Hour)}, want: del},
		{name: "terminal without a finish time",
			o: watcher.Observed{Build: build(schema.StatusFailed), Job: job(time.Hour)}, want: del},
		{name: "cancelled, Job active: at once",
			o: watcher.Observed{Build: build(schema.StatusCancelled, time.Second), Job: job(time.Hour)}, want: del},
		{name: "cancelled, no Job", o: watcher.Observed{Build: build(schema.StatusCancelled, time.Second)}, want: watcher.Decision{}},
		{name: "completed, Job finished",
			o: watcher.Observed{Build: build(schema.StatusCompleted, time.Hour), Job: job(time.Hour, complete)}, want: watcher.Decision{}},
		{name: "failed, Job failed",
			o: watcher.Observed{Build: build(schema.StatusFailed, time.Hour), Job: job(time.Hour, deadline)}, want: watcher.Decision{}},
		{name: "cancelled, Job being deleted",
			o: watcher.Observed{Build: build(schema.StatusCancelled, time.Second), Job: job(time.Hour, deleting)}, want: watcher.Decision{}},

		// Pending: the launcher's River job owns it.
		{name: "pending, no Job", o: watcher.Observed{Build: build(schema.StatusPending)}, want: watcher.Decision{}},
		{name: "pending, a Job (reserved, being launched)",
			o: watcher.Observed{Build: build(schema.StatusPending), Job: job(10 * time.Minute)}, want: watcher.Decision{}},

		// Running, and the Job is gone or going.
		{name: "running, no Job", o: watcher.Observed{Build: build(schema.StatusRunning)}, want: fail(schema.ReasonJobDeleted, "job deleted")},
		{name: "running, Job being deleted",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, deleting), Pods: pods(pod(time.Minute, corev1.PodRunning, running))},
			want: fail(schema.ReasonJobDeleted, "job deleted")},
		{name: "running, finished Job being deleted: judged by how it finished",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, complete, deleting)},
			want: fail(schema.ReasonRunnerLost, lost)},

		// The Job ended and the runner's result never came.
		{name: "Job complete, no pods", o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, complete)},
			want: fail(schema.ReasonRunnerLost, lost)},
		{name: "Job complete, container exited 0 without a message",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, complete), Pods: pods(pod(time.Minute, corev1.PodSucceeded, terminated("Completed", 0, "")))},
			want: fail(schema.ReasonPodFailed, lost)},
		{name: "deadline exceeded names the deadline",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Hour, deadline), Pods: pods(pod(time.Hour, corev1.PodFailed, terminated("Error", 143, "")))},
			want: fail(schema.ReasonDeadline, "timed out after 1h0m0s")},
		{name: "deadline exceeded, a 90s deadline",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Hour, deadline, func(j *batchv1.Job) { j.Spec.ActiveDeadlineSeconds = ptr.To[int64](90) })},
			want: fail(schema.ReasonDeadline, "timed out after 1m30s")},
		{name: "deadline exceeded without a deadline in the spec",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Hour, deadline, func(j *batchv1.Job) { j.Spec.ActiveDeadlineSeconds = nil })},
			want: fail(schema.ReasonDeadline, "timed out after 0s")},
		{name: "Job failed, no pods: runner lost with the Job's message",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff)},
			want: fail(schema.ReasonRunnerLost, lost+": Job has reached the specified backoff limit")},
		{name: "Job failed, pods without a terminated container: runner lost",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff), Pods: pods(pod(time.Minute, corev1.PodFailed, running))},
			want: fail(schema.ReasonRunnerLost, lost+": Job has reached the specified backoff limit")},
		{name: "Job failed, container exited 1: pod failed",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff), Pods: pods(pod(time.Minute, corev1.PodFailed, terminated("Error", 1, "")))},
			want: fail(schema.ReasonPodFailed, "runner exited with code 1 without a result")},
		{name: "Job failed, the terminated container of the second pod counts",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff),
				Pods: pods(pod(time.Minute, corev1.PodFailed), pod(time.Minute, corev1.PodFailed, running, terminated("Error", 2, "  no space left on device\n")))},
			want: fail(schema.ReasonPodFailed, "runner exited with code 2 without a result: no space left on device")},
		{name: "OOM names the memory limit",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff),
				Pods: pods(pod(time.Minute, corev1.PodFailed, memoryLimit("2Gi"), terminated("OOMKilled", 137, summary)))},
			want: fail(schema.ReasonOOM, "out of memory (limit 2Gi)")},
		{name: "OOM without a limit",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, complete), Pods: pods(pod(time.Minute, corev1.PodFailed, terminated("OOMKilled", 137, "")))},
			want: fail(schema.ReasonOOM, "out of memory (limit unknown)")},
		{name: "a kiln summary finishes with its result and reason",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff),
				Pods: pods(pod(time.Minute, corev1.PodFailed, terminated("Error", 1, "\n"+summary+"\n")))},
			want: watcher.Decision{Action: watcher.ActFinish, Result: &schema.BuildResult{Success: false, Error: "the remote refused the push",
				Reason: schema.ReasonPushRejected, CommitSHA: "abc123", DurationMS: 4200}}},
		{name: "a successful kiln summary",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, complete),
				Pods: pods(pod(time.Minute, corev1.PodSucceeded, terminated("Completed", 0, `{"kiln":1,"success":true,"commit_sha":"def456","duration_ms":10,"reported":true}`)))},
			want: watcher.Decision{Action: watcher.ActFinish, Result: &schema.BuildResult{Success: true, CommitSHA: "def456", DurationMS: 10}}},
		{name: "a cancelled kiln summary",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff),
				Pods: pods(pod(time.Minute, corev1.PodFailed, terminated("Error", 143, `{"kiln":1,"success":false,"cancelled":true,"error":"terminated"}`)))},
			want: watcher.Decision{Action: watcher.ActFinish, Result: &schema.BuildResult{Cancelled: true, Error: "terminated"}}},
		{name: "another format version is text",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff),
				Pods: pods(pod(time.Minute, corev1.PodFailed, terminated("Error", 1, `{"kiln":2,"success":true}`)))},
			want: fail(schema.ReasonPodFailed, `runner exited with code 1 without a result: {"kiln":2,"success":true}`)},
		{name: "a long non-kiln message is truncated",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute, backoff),
				Pods: pods(pod(time.Minute, corev1.PodFailed, terminated("Error", 2, long)))},
			want: fail(schema.ReasonPodFailed, "runner exited with code 2 without a result: "+strings.TrimSpace(long)[:1024]+"…")},

		// The pod cannot start: image pull.
		{name: "image pull failing, within the timeout",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(30 * time.Second),
				Pods: pods(pod(30*time.Second, corev1.PodPending, waiting("ImagePullBackOff", "Back-off pulling image")))},
			want: watcher.Decision{After: 90 * time.Second}},
		{name: "image pull failing, timeout passed",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(3 * time.Minute),
				Pods: pods(pod(3*time.Minute, corev1.PodPending, waiting("ImagePullBackOff", "Back-off pulling image")))},
			want: failAndDelete(schema.ReasonImagePull, "image pull failed for kilnbuild/kiln-jobrunner:bad: ImagePullBackOff: Back-off pulling image")},
		{name: "image pull failing, exactly at the timeout",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(2 * time.Minute),
				Pods: pods(pod(2*time.Minute, corev1.PodPending, waiting("ErrImagePull", "not found")))},
			want: failAndDelete(schema.ReasonImagePull, "image pull failed for kilnbuild/kiln-jobrunner:bad: ErrImagePull: not found")},
		{name: "invalid image name",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(5 * time.Minute),
				Pods: pods(pod(5*time.Minute, corev1.PodPending, waiting("InvalidImageName", "couldn't parse image name")))},
			want: failAndDelete(schema.ReasonImagePull, "image pull failed for kilnbuild/kiln-jobrunner:bad: InvalidImageName: couldn't parse image name")},
		{name: "an init container's image pull counts",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(5 * time.Minute),
				Pods: pods(pod(5*time.Minute, corev1.PodPending, initWaiting("ErrImagePull", "manifest unknown")))},
			want: failAndDelete(schema.ReasonImagePull, "image pull failed for busybox:nope: ErrImagePull: manifest unknown")},
		{name: "waiting for another reason",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Hour),
				Pods: pods(pod(time.Hour, corev1.PodPending, waiting("CreateContainerConfigError", `secret "x" not found`)))},
			want: watcher.Decision{}},
		{name: "a pod no longer pending is not judged",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Hour),
				Pods: pods(pod(time.Hour, corev1.PodRunning, waiting("ImagePullBackOff", "sidecar")))},
			want: watcher.Decision{}},

		// The pod cannot start: no node. The earlier of the condition's time and the pod's creation counts.
		{name: "unschedulable, within the timeout: time left from the pod's creation",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(2 * time.Minute),
				Pods: pods(pod(2*time.Minute, corev1.PodPending, unschedulable(time.Minute, "0/3 nodes are available: 3 Insufficient memory.")))},
			want: watcher.Decision{After: 3 * time.Minute}},
		{name: "unschedulable, within the timeout: time left from the condition",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute),
				Pods: pods(pod(time.Minute, corev1.PodPending, unschedulable(4*time.Minute, "0/3 nodes are available")))},
			want: watcher.Decision{After: time.Minute}},
		{name: "unschedulable, the pod's creation passed the timeout",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(6 * time.Minute),
				Pods: pods(pod(6*time.Minute, corev1.PodPending, unschedulable(30*time.Second, "0/3 nodes are available: 3 Insufficient memory.")))},
			want: failAndDelete(schema.ReasonUnschedulable, "unschedulable: 0/3 nodes are available: 3 Insufficient memory.")},
		{name: "unschedulable, the condition passed the timeout",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute),
				Pods: pods(pod(time.Minute, corev1.PodPending, unschedulable(5*time.Minute, "0/1 nodes are available: 1 node(s) had untolerated taint.")))},
			want: failAndDelete(schema.ReasonUnschedulable, "unschedulable: 0/1 nodes are available: 1 node(s) had untolerated taint.")},
		{name: "scheduled: nothing to do",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Hour),
				Pods: pods(pod(time.Hour, corev1.PodPending, func(p *corev1.Pod) {
					p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
				}))},
			want: watcher.Decision{}},
		{name: "image pull and unschedulable: the sooner look",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute),
				Pods: pods(
					pod(time.Minute, corev1.PodPending, unschedulable(time.Minute, "0/3 nodes are available")),
					pod(30*time.Second, corev1.PodPending, waiting("ImagePullBackOff", "Back-off")))},
			want: watcher.Decision{After: 90 * time.Second}},
		{name: "unschedulable after an image pull: the sooner look",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute),
				Pods: pods(
					pod(time.Minute, corev1.PodPending, waiting("ImagePullBackOff", "Back-off")),
					pod(time.Minute, corev1.PodPending, unschedulable(time.Minute, "0/3 nodes are available")))},
			want: watcher.Decision{After: time.Minute}},
		{name: "image pull of one pod passed, another within: fail",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(5 * time.Minute),
				Pods: pods(
					pod(time.Second, corev1.PodPending, waiting("ImagePullBackOff", "Back-off")),
					pod(5*time.Minute, corev1.PodPending, waiting("ErrImagePull", "denied")))},
			want: failAndDelete(schema.ReasonImagePull, "image pull failed for kilnbuild/kiln-jobrunner:bad: ErrImagePull: denied")},
		{name: "running normally", o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Hour),
			Pods: pods(pod(time.Hour, corev1.PodRunning, running))}, want: watcher.Decision{}},

		// No pod at all.
		{name: "no pods yet, within the timeout",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute)}, want: watcher.Decision{After: 4 * time.Minute}},
		{name: "no pods past the timeout, no FailedCreate: look again later",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(6 * time.Minute)}, want: watcher.Decision{After: 5 * time.Minute}},
		{name: "no pods past the timeout, a FailedCreate",
			o: watcher.Observed{Build: build(schema.StatusRunning), Job: job(6 * time.Minute),
				FailedCreate: `pods "kiln-build-b1-" is forbidden: error looking up service account kiln-builds/runner: serviceaccount "runner" not found`},
			want: failAndDelete(schema.ReasonPodCreate, `the Job's pod could not be created: pods "kiln-build-b1-" is forbidden: error looking up service account kiln-builds/runner: serviceaccount "runner" not found`)},
		{name: "no pods within the timeout, a FailedCreate: not yet",
			o:    watcher.Observed{Build: build(schema.StatusRunning), Job: job(time.Minute), FailedCreate: "quota"},
			want: watcher.Decision{After: 4 * time.Minute}},
	} {
		tc.o.Now = now
		assert.Equal(t, tc.want, watcher.Decide(tc.o, timeouts), tc.name)
	}
}

// Decide reads nothing but its arguments: the same observation, the same
// decision, and the observation is left as it was.
func TestDecideIsPure(t *testing.T) {
	t.Parallel()
	o := watcher.Observed{Build: build(schema.StatusRunning), Job: job(3 * time.Minute),
		Pods: pods(pod(3*time.Minute, corev1.PodPending, waiting("ImagePullBackOff", "Back-off"), initWaiting("ErrImagePull", "x"))), Now: now}
	before := o.Pods[0].DeepCopy()
	first := watcher.Decide(o, timeouts)
	assert.Equal(t, first, watcher.Decide(o, timeouts))
	assert.Equal(t, before, o.Pods[0])
}
