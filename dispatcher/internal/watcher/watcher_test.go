package watcher_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle/lifecycletest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/watcher"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const namespace = "kiln-builds"

// env is a watcher's world, sample-controller style: a fake clientset the
// watcher's informers list and watch, a test schema, and a real lifecycle
// that wakes the watcher's queue when a build with a Job is cancelled, as
// the app wires it.
type env struct {
	db      *pgtest.DB
	kube    *fake.Clientset
	lc      *lifecycle.Lifecycle
	queue   watcher.Queue
	project string
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	db := pgtest.New(t)
	e := &env{db: db, kube: fake.NewClientset(), queue: watcher.NewQueue()}
	t.Cleanup(e.queue.ShutDown) // a watcher given it shuts it down too; twice is safe
	e.lc = lifecycletest.New(t, db, lifecycle.Options{OnTransition: func(b *store.Build) {
		if b.Status == schema.StatusCancelled && b.JobName != "" {
			e.queue.Add(b.ID)
		}
	}})
	e.project = apptest.Project(t, db.Pool, "web", func(p *schema.Project) { p.MaxConcurrent = 100 }).ID
	return e
}

// newWatcher makes a watcher on e; it is stopped when the test ends.
func (e *env) newWatcher(t *testing.T) *watcher.Watcher {
	t.Helper()
	w, err := watcher.New(watcher.Options{Client: e.kube, Pool: e.db.Pool, Lifecycle: e.lc, Queue: e.queue, Workers: 2})
	require.NoError(t, err)
	t.Cleanup(w.Stop)
	return w
}

// build stores a build and moves it to status (running: started with its Job's name).
func (e *env) build(t *testing.T, status schema.Status) string {
	t.Helper()
	ctx := context.Background()
	id, err := uuid.NewV7()
	require.NoError(t, err)
	_, err = store.InsertBuild(ctx, e.db.Pool, store.NewBuild{ID: id.String(), ProjectID: e.project,
		Spec: schema.BuildSpec{Prompt: "x"}, RequestedBy: "test"})
	require.NoError(t, err)
	if status == schema.StatusPending {
		return id.String()
	}
	_, err = e.lc.Start(ctx, id.String(), jobtemplates.JobName(id.String()))
	require.NoError(t, err)
	if status == schema.StatusCancelled {
		_, err = e.lc.Cancel(ctx, id.String(), "cancelled by alice")
		require.NoError(t, err)
	}
	return id.String()
}

func (e *env) get(t *testing.T, id string) *store.Build {
	t.Helper()
	b, err := store.GetBuild(context.Background(), e.db.Pool, id)
	require.NoError(t, err)
	return b
}

// add puts objects in the fake cluster.
func (e *env) add(t *testing.T, objs ...runtime.Object) {
	t.Helper()
	for _, o := range objs {
		require.NoError(t, e.kube.Tracker().Add(o))
	}
}

// deleted reports whether the watcher asked to delete build id's Job.
func (e *env) deleted(id string) bool {
	for _, a := range e.kube.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && a.GetResource().Resource == "jobs" && d.GetName() == jobtemplates.JobName(id) {
			return true
		}
	}
	return false
}

func (e *env) actions(verb, resource string) []k8stesting.Action {
	var out []k8stesting.Action
	for _, a := range e.kube.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			out = append(out, a)
		}
	}
	return out
}

// meta is the metadata Render gives a build's Job and pods.
func meta(id, name string, created time.Time) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace, CreationTimestamp: metav1.NewTime(created),
		Labels:      map[string]string{jobtemplates.LabelManagedBy: jobtemplates.ManagedBy, jobtemplates.LabelBuildID: jobtemplates.LabelValue(id)},
		Annotations: map[string]string{jobtemplates.AnnotationBuildID: id}}
}

func kubeJob(id string, created time.Time, conds ...batchv1.JobCondition) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: meta(id, jobtemplates.JobName(id), created),
		Spec:   batchv1.JobSpec{ActiveDeadlineSeconds: ptr.To[int64](3600)},
		Status: batchv1.JobStatus{Conditions: conds}}
}

func kubePod(id string, created time.Time, phase corev1.PodPhase, cs corev1.ContainerStatus) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: meta(id, jobtemplates.JobName(id)+"-x7k2p", created),
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: jobtemplates.ContainerName, Image: "kilnbuild/kiln-jobrunner:bad",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}}}},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{cs}}}
}

func exited(reason string, code int32, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: jobtemplates.ContainerName,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code, Message: msg}}}
}

var (
	jobFailed   = batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonBackoffLimitExceeded}
	jobComplete = batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}
	runningCS   = corev1.ContainerStatus{Name: jobtemplates.ContainerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
)

// The sync loop against a fake cluster: each kind of build is settled as
// Decide says, through the lifecycle, and the cluster sees exactly the
// deletes the decisions ask for.
func TestSync(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	long := time.Now().Add(-10 * time.Minute)
	recent := time.Now().Add(-30 * time.Second)

	imagePull := e.build(t, schema.StatusRunning)
	cancelled := e.build(t, schema.StatusCancelled)
	oom := e.build(t, schema.StatusRunning)
	result := e.build(t, schema.StatusRunning)
	orphan := uuid.NewString() // a Job without an audit row
	gone := e.build(t, schema.StatusRunning)
	podCreate := e.build(t, schema.StatusRunning)
	pending := e.build(t, schema.StatusPending)
	live := e.build(t, schema.StatusRunning)
	lagging := e.build(t, schema.StatusRunning) // its Job is not in the informers' cache yet

	e.add(t,
		kubeJob(imagePull, long),
		kubePod(imagePull, long, corev1.PodPending, corev1.ContainerStatus{Name: jobtemplates.ContainerName, Image: "kilnbuild/kiln-jobrunner:bad",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}),
		kubeJob(cancelled, recent),
		kubePod(cancelled, recent, corev1.PodRunning, runningCS),
		kubeJob(oom, long, jobFailed),
		kubePod(oom, long, corev1.PodFailed, exited("OOMKilled", 137, "")),
		kubeJob(result, long, jobComplete),
		kubePod(result, long, corev1.PodSucceeded, exited("Completed", 0,
			`{"kiln":1,"success":true,"commit_sha":"abc123","files_changed":1,"duration_ms":5000,"reported":false}`)),
		kubeJob(orphan, long),
		kubeJob(podCreate, long),
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "ev1", Namespace: namespace}, Reason: "FailedCreate",
			InvolvedObject: corev1.ObjectReference{Kind: "Job", Namespace: namespace, Name: jobtemplates.JobName(podCreate)},
			Message:        "an older complaint", LastTimestamp: metav1.NewTime(long)},
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "ev2", Namespace: namespace}, Reason: "FailedCreate",
			InvolvedObject: corev1.ObjectReference{Kind: "Job", Namespace: namespace, Name: jobtemplates.JobName(podCreate)},
			Message:        `pods "x" is forbidden: error looking up service account kiln-builds/runner`, LastTimestamp: metav1.NewTime(recent)},
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "ev3", Namespace: namespace}, Reason: "SuccessfulDelete",
			InvolvedObject: corev1.ObjectReference{Kind: "Job", Namespace: namespace, Name: jobtemplates.JobName(podCreate)},
			Message:        "not a FailedCreate", LastTimestamp: metav1.NewTime(time.Now())},
		kubeJob(live, recent),
		kubePod(live, recent, corev1.PodRunning, runningCS),
	)
	// The API server has the lagging build's Job though the cache does not.
	e.kube.PrependReactor("get", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.GetAction).GetName() == jobtemplates.JobName(lagging) {
			return true, kubeJob(lagging, recent), nil
		}
		return false, nil, nil
	})

	w := e.newWatcher(t)
	require.NoError(t, w.Start(ctx))

	settled := func(id string, status schema.Status) func() bool {
		return func() bool { return e.get(t, id).Status == status }
	}
	wait := func(cond func() bool, msg string) {
		t.Helper()
		require.Eventually(t, cond, 10*time.Second, 5*time.Millisecond, msg)
	}
	wait(settled(imagePull, schema.StatusFailed), "image pull")
	wait(settled(oom, schema.StatusFailed), "oom")
	wait(settled(result, schema.StatusCompleted), "result")
	wait(settled(gone, schema.StatusFailed), "job deleted")
	wait(settled(podCreate, schema.StatusFailed), "pod create")
	wait(func() bool { return e.deleted(imagePull) }, "image pull's Job deleted")
	wait(func() bool { return e.deleted(cancelled) }, "cancelled build's Job deleted")
	wait(func() bool { return e.deleted(orphan) }, "orphan Job deleted")
	wait(func() bool { return e.deleted(podCreate) }, "pod create's Job deleted")

	// A cancel wakes the watcher: the Job goes now, not at the next reconcile.
	require.False(t, e.deleted(live))
	_, err := e.lc.Cancel(ctx, live, "cancelled by bob")
	require.NoError(t, err)
	wait(func() bool { return e.deleted(live) }, "the just-cancelled build's Job deleted")

	// A reconcile (River's periodic job) finds an active build nothing else
	// would have woken the watcher for.
	late := e.build(t, schema.StatusRunning)
	require.NoError(t, watcher.NewReconcileWorker(w).Work(ctx, &river.Job[watcher.ReconcileArgs]{}))
	wait(settled(late, schema.StatusFailed), "reconciled")

	w.Stop()

	for id, want := range map[string]struct {
		reason schema.Reason
		error  string
	}{
		imagePull: {schema.ReasonImagePull, "image pull failed for kilnbuild/kiln-jobrunner:bad: ImagePullBackOff: Back-off pulling image"},
		oom:       {schema.ReasonOOM, "out of memory (limit 256Mi)"},
		gone:      {schema.ReasonJobDeleted, "job deleted"},
		late:      {schema.ReasonJobDeleted, "job deleted"},
		podCreate: {schema.ReasonPodCreate, `the Job's pod could not be created: pods "x" is forbidden: error looking up service account kiln-builds/runner`},
	} {
		b := e.get(t, id)
		assert.Equal(t, want.reason, b.Reason, id)
		assert.Equal(t, want.error, b.Error, id)
	}
	r := e.get(t, result)
	assert.Equal(t, schema.ReasonNone, r.Reason)
	require.NotNil(t, r.Result)
	assert.Equal(t, "abc123", r.Result.CommitSHA)
	assert.Equal(t, int64(5000), r.Result.DurationMS)
	assert.Equal(t, schema.StatusCancelled, e.get(t, cancelled).Status)
	assert.Equal(t, schema.ReasonCancelled, e.get(t, cancelled).Reason)
	assert.Equal(t, schema.StatusCancelled, e.get(t, live).Status)
	assert.Equal(t, schema.StatusPending, e.get(t, pending).Status, "pending builds are the launcher's")
	assert.Equal(t, schema.StatusRunning, e.get(t, lagging).Status, "the live Job was believed, not the cache")

	// The Jobs of builds that failed with their Job's own ending, or that
	// finished, are left for their TTL; so are the Jobs of live builds.
	for name, id := range map[string]string{"oom": oom, "result": result, "lagging": lagging, "pending": pending} {
		assert.False(t, e.deleted(id), "%s: no delete", name)
	}
	for _, a := range e.actions("delete", "jobs") {
		d := a.(k8stesting.DeleteActionImpl)
		assert.Equal(t, namespace, d.GetNamespace())
		require.NotNil(t, d.DeleteOptions.PropagationPolicy)
		assert.Equal(t, metav1.DeletePropagationBackground, *d.DeleteOptions.PropagationPolicy, "the pods go with the Job")
	}

	// FailedCreate events are looked up only for a Job with no pod past the timeout.
	evs := e.actions("list", "events")
	require.NotEmpty(t, evs)
	for _, a := range evs {
		fs := a.(k8stesting.ListAction).GetListRestrictions().Fields.String()
		assert.True(t, strings.Contains(fs, "involvedObject.name="+jobtemplates.JobName(podCreate)), fs)
		assert.Contains(t, fs, "involvedObject.kind=Job")
	}
	// The API is asked for a running build's Job only when the cache lacks it.
	gets := map[string]bool{}
	for _, a := range e.actions("get", "jobs") {
		gets[a.(k8stesting.GetAction).GetName()] = true
	}
	assert.Equal(t, map[string]bool{jobtemplates.JobName(gone): true, jobtemplates.JobName(lagging): true,
		jobtemplates.JobName(late): true}, gets)
}

// A terminal build's Job that is still running a grace after the result is
// deleted then, not before.
func TestSyncDeletesALingeringJobAfterTheGrace(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	id := e.build(t, schema.StatusRunning)
	_, err := e.lc.Finish(ctx, id, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)
	finished := *e.get(t, id).FinishedAt
	e.add(t, kubeJob(id, finished.Add(-time.Minute)), kubePod(id, finished.Add(-time.Minute), corev1.PodRunning, runningCS))

	// The watcher's clock says the grace has not passed; then that it has.
	var clock atomicTime
	clock.set(finished.Add(10 * time.Second))
	w, err := watcher.New(watcher.Options{Client: e.kube, Pool: e.db.Pool, Lifecycle: e.lc, Queue: e.queue, Now: clock.get})
	require.NoError(t, err)
	t.Cleanup(w.Stop)
	require.NoError(t, w.Start(ctx))
	// One build is synced by one worker at a time, so a look that has begun
	// means the one before it has ended: wait for three looks to end within
	// the grace (enqueueing at every try: the queue merges a queued build).
	require.Eventually(t, func() bool { w.Enqueue(id); return clock.calls() > 3 }, 10*time.Second, 5*time.Millisecond)
	assert.False(t, e.deleted(id), "not within the grace")
	clock.set(finished.Add(2 * time.Minute))
	w.Enqueue(id)
	require.Eventually(t, func() bool { return e.deleted(id) }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, schema.StatusCompleted, e.get(t, id).Status)
}

// A sync that fails (the API refused the delete) is retried with backoff
// until it succeeds.
func TestSyncRetriesAfterAnError(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	id := e.build(t, schema.StatusCancelled)
	e.add(t, kubeJob(id, time.Now()), kubePod(id, time.Now(), corev1.PodRunning, runningCS))
	var refused atomic.Int32
	e.kube.PrependReactor("delete", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refused.Add(1) <= 2 {
			return true, nil, apierrors.NewServiceUnavailable("apiserver restarting")
		}
		return false, nil, nil
	})
	w := e.newWatcher(t)
	require.NoError(t, w.Start(ctx))
	require.Eventually(t, func() bool {
		_, err := e.kube.BatchV1().Jobs(namespace).Get(ctx, jobtemplates.JobName(id), metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 10*time.Second, 5*time.Millisecond)
	assert.GreaterOrEqual(t, len(e.actions("delete", "jobs")), 3)
}

// atomicTime is a clock the test moves and the watcher reads.
type atomicTime struct {
	now, n atomic.Int64
}

func (c *atomicTime) set(t time.Time) { c.now.Store(t.UnixNano()) }

func (c *atomicTime) get() time.Time {
	c.n.Add(1)
	return time.Unix(0, c.now.Load())
}

// calls is how many times the watcher has read the clock (once a sync).
func (c *atomicTime) calls() int64 { return c.n.Load() }

func TestNewValidates(t *testing.T) {
	e := setup(t)
	full := watcher.Options{Client: e.kube, Pool: e.db.Pool, Lifecycle: e.lc}
	for name, edit := range map[string]func(*watcher.Options){
		"Client":               func(o *watcher.Options) { o.Client = nil },
		"Pool":                 func(o *watcher.Options) { o.Pool = nil },
		"Lifecycle":            func(o *watcher.Options) { o.Lifecycle = nil },
		"ImagePullTimeout":     func(o *watcher.Options) { o.ImagePullTimeout = -time.Second },
		"UnschedulableTimeout": func(o *watcher.Options) { o.UnschedulableTimeout = -time.Second },
		"Workers":              func(o *watcher.Options) { o.Workers = -1 },
	} {
		o := full
		edit(&o)
		_, err := watcher.New(o)
		assert.Error(t, err, name)
	}
}

// The Start/Stop contract: Stop without Start and twice are safe, Stop waits
// for what Start began, and a watcher is not started again.
func TestStartStop(t *testing.T) {
	e := setup(t)
	ctx := context.Background()

	never, err := watcher.New(watcher.Options{Client: e.kube, Pool: e.db.Pool, Lifecycle: e.lc})
	require.NoError(t, err)
	never.Stop()
	never.Stop()
	require.Error(t, never.Start(ctx), "not after Stop")

	w := e.newWatcher(t)
	require.NoError(t, w.Start(ctx))
	require.Error(t, w.Start(ctx), "only once")
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Stop()
		w.Stop()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return")
	}
	w.Enqueue("after stop") // a shut-down queue drops it
	require.Error(t, w.Start(ctx))
}

// Start's context ending does not stop the watcher; Stop does.
func TestStartContextEndingDoesNotStop(t *testing.T) {
	e := setup(t)
	w := e.newWatcher(t)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, w.Start(ctx))
	cancel()
	id := e.build(t, schema.StatusRunning)
	w.Enqueue(id)
	require.Eventually(t, func() bool { return e.get(t, id).Status == schema.StatusFailed }, 10*time.Second, 5*time.Millisecond)
	w.Stop()
}

func TestReconcileJob(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "kiln_reconcile", watcher.ReconcileArgs{}.Kind())
	p := watcher.PeriodicReconcile(30 * time.Second)
	require.NotNil(t, p)
}

// Cached counts what the informers hold: Kiln's Jobs and pods only (the
// label selector keeps others out), nothing before Start, and a deleted
// Job no longer.
func TestCached(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	a, b := e.build(t, schema.StatusRunning), e.build(t, schema.StatusRunning)
	now := time.Now()
	e.add(t, kubeJob(a, now), kubePod(a, now, corev1.PodRunning, runningCS),
		kubeJob(b, now), kubePod(b, now, corev1.PodRunning, runningCS),
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "not-kilns", Namespace: namespace}})
	w := e.newWatcher(t)
	assert.Equal(t, map[string]int{watcher.ResourceJobs: 0, watcher.ResourcePods: 0}, w.Cached(), "before Start")
	require.NoError(t, w.Start(ctx))
	assert.Equal(t, map[string]int{watcher.ResourceJobs: 2, watcher.ResourcePods: 2}, w.Cached())
	require.NoError(t, e.kube.BatchV1().Jobs(namespace).Delete(ctx, jobtemplates.JobName(b), metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return w.Cached()[watcher.ResourceJobs] == 1 }, 10*time.Second, 5*time.Millisecond)
}
