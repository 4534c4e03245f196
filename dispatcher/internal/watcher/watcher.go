// Package watcher tracks build Jobs to a terminal status. Informers on the
// Jobs and Pods Kiln manages feed a work queue of build ids; sync compares the
// cluster's state with the audit trail and settles the difference: results
// from termination messages, deadlines, OOM kills, image pull and scheduling
// failures, Jobs deleted by someone else, and Jobs of builds that are already
// terminal. No polling: a periodic reconcile (run by one replica) only
// re-enqueues what the database says is active.
package watcher

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// terminalGrace is how long a Job may keep running after its build's result.
const terminalGrace = time.Minute

// Queue is the watcher's work queue of build ids. The app makes it first
// (NewQueue) so the lifecycle can wake the watcher (a cancelled build's Job
// goes at once) before the watcher itself exists.
type Queue = workqueue.TypedRateLimitingInterface[string]

// NewQueue returns a Queue for Options.Queue.
func NewQueue() Queue {
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kiln-builds"})
}

// Defaults of Options and of PeriodicReconcile; the dispatcher's
// configuration (dispatcher/internal/config) shows these.
const (
	DefaultNamespace            = "kiln-builds"
	DefaultImagePullTimeout     = 2 * time.Minute
	DefaultUnschedulableTimeout = 5 * time.Minute
	DefaultReconcileInterval    = 30 * time.Second
)

// Options configures New.
type Options struct {
	Client               kubernetes.Interface // required
	Pool                 *pgxpool.Pool        // required
	Lifecycle            *lifecycle.Lifecycle // required: failures and results are applied through it
	Queue                Queue                // default: NewQueue(); Stop shuts it down
	Namespace            string               // default DefaultNamespace
	ImagePullTimeout     time.Duration        // how long image pull errors may last; default DefaultImagePullTimeout
	UnschedulableTimeout time.Duration        // how long a pod may stay unschedulable; default DefaultUnschedulableTimeout
	Workers              int                  // sync goroutines; default 4
	ResyncPeriod         time.Duration        // informers' resync; default 10m
	CacheSyncTimeout     time.Duration        // how long Start waits for the informers' caches; default 1m
	Now                  func() time.Time     // default time.Now
	Logger               *slog.Logger         // default: discard
}

// Watcher tracks build Jobs.
type Watcher struct {
	o       Options
	logger  *slog.Logger
	factory informers.SharedInformerFactory
	jobs    batchlisters.JobLister
	pods    cache.Indexer          // the pod informer's cache, indexed by build (indexByBuild)
	stores  map[string]cache.Store // the informers' caches by resource, for Cached
	queue   Queue
	synced  []cache.InformerSynced

	mu      sync.Mutex
	cancel  context.CancelFunc // set by Start; guarded by mu
	stopped bool               // guarded by mu
	wg      sync.WaitGroup
}

// New returns a Watcher; Start runs it.
func New(o Options) (*Watcher, error) {
	if o.Client == nil || o.Pool == nil || o.Lifecycle == nil {
		return nil, errors.New("watcher: Client, Pool and Lifecycle are required")
	}
	o.Namespace = cmp.Or(o.Namespace, DefaultNamespace)
	o.ImagePullTimeout = cmp.Or(o.ImagePullTimeout, DefaultImagePullTimeout)
	o.UnschedulableTimeout = cmp.Or(o.UnschedulableTimeout, DefaultUnschedulableTimeout)
	o.Workers = cmp.Or(o.Workers, 4)
	o.ResyncPeriod = cmp.Or(o.ResyncPeriod, 10*time.Minute)
	o.CacheSyncTimeout = cmp.Or(o.CacheSyncTimeout, time.Minute)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ImagePullTimeout < 0 || o.UnschedulableTimeout < 0 || o.Workers < 0 {
		return nil, errors.New("watcher: timeouts and Workers must not be negative")
	}
	if o.Queue == nil {
		o.Queue = NewQueue() // after validating: its goroutine ends only with Stop
	}
	w := &Watcher{o: o, queue: o.Queue, logger: cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "watcher")}
	w.factory = informers.NewSharedInformerFactoryWithOptions(o.Client, o.ResyncPeriod,
		informers.WithNamespace(o.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = jobtemplates.Selector().String() }))
	ji := w.factory.Batch().V1().Jobs()
	pi := w.factory.Core().V1().Pods()
	// The caches hold every build's Job and pod until the Job's TTL removes
	// them, finished builds' too: keep of each only what Decide reads.
	if err := ji.Informer().SetTransform(trimJob); err != nil {
		return nil, err
	}
	if err := pi.Informer().SetTransform(trimPod); err != nil {
		return nil, err
	}
	// A build's pods are looked up on every sync of it: by an index, not by
	// matching every cached pod's labels (a cost that grows with the builds
	// running).
	if err := pi.Informer().AddIndexers(cache.Indexers{indexByBuild: buildOfObject}); err != nil {
		return nil, err
	}
	w.jobs, w.pods = ji.Lister(), pi.Informer().GetIndexer()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    w.enqueueObject,
		UpdateFunc: func(_, obj any) { w.enqueueObject(obj) },
		DeleteFunc: w.enqueueObject,
	}
	if _, err := ji.Informer().AddEventHandler(handler); err != nil {
		return nil, err
	}
	if _, err := pi.Informer().AddEventHandler(handler); err != nil {
		return nil, err
	}
	w.synced = []cache.InformerSynced{ji.Informer().HasSynced, pi.Informer().HasSynced}
	w.stores = map[string]cache.Store{ResourceJobs: ji.Informer().GetStore(), ResourcePods: pi.Informer().GetStore()}
	return w, nil
}

// Resources the watcher's informers cache, the keys of Cached.
const (
	ResourceJobs = "jobs"
	ResourcePods = "pods"
)

// Cached returns how many objects each informer's cache holds, by resource
// (ResourceJobs, ResourcePods): the part of the dispatcher's memory that
// grows with the builds whose Jobs exist, running or not yet removed by
// their ttlSecondsAfterFinished. It copies the caches' keys (not the
// objects), so a scrape costs one slice of strings per resource.
func (w *Watcher) Cached() map[string]int {
	out := make(map[string]int, len(w.stores))
	for r, s := range w.stores {
		out[r] = len(s.ListKeys())
	}
	return out
}

func (w *Watcher) enqueueObject(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	mo, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	if id, ok := jobtemplates.BuildIDOf(mo); ok {
		w.queue.Add(id)
	}
}

// Enqueue asks for a build to be looked at (after a cancel, say).
func (w *Watcher) Enqueue(buildID string) { w.queue.Add(buildID) }

// Start starts the informers, waits for their caches, reconciles once and
// starts the sync workers. It may be called once; Stop ends what it began.
func (w *Watcher) Start(ctx context.Context) error {
	w.mu.Lock()
	if w.stopped || w.cancel != nil {
		w.mu.Unlock()
		return errors.New("watcher: already started or stopped")
	}
	ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	w.mu.Unlock()
	w.factory.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, w.o.CacheSyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), w.synced...) {
		w.Stop()
		return fmt.Errorf("watcher: informer caches did not sync within %s", w.o.CacheSyncTimeout)
	}
	if err := w.Reconcile(ctx); err != nil {
		w.logger.WarnContext(ctx, "initial reconcile", "error", err)
	}
	for range w.o.Workers {
		w.wg.Go(func() {
			for w.next(ctx) {
			}
		})
	}
	return nil
}

// Stop stops the workers and informers and waits for them. It is safe
// before Start and more than once.
func (w *Watcher) Stop() {
	w.mu.Lock()
	w.stopped = true
	cancel := w.cancel
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	w.queue.ShutDown()
	w.wg.Wait()
	w.factory.Shutdown()
}

func (w *Watcher) next(ctx context.Context) bool {
	id, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(id)
	after, err := w.sync(ctx, id)
	switch {
	case err != nil && ctx.Err() != nil:
		// Stopping: the next replica (or the next start) looks again.
		w.queue.Forget(id)
	case err != nil:
		w.logger.WarnContext(ctx, "sync failed; retrying", "build_id", id, "error", err)
		w.queue.AddRateLimited(id)
	case after > 0:
		w.queue.Forget(id)
		w.queue.AddAfter(id, after)
	default:
		w.queue.Forget(id)
	}
	return true
}

// Reconcile enqueues every build the database calls active and every build
// that has a Job: crash recovery and the periodic safety net.
func (w *Watcher) Reconcile(ctx context.Context) error {
	active, err := store.ActiveBuilds(ctx, w.o.Pool)
	if err != nil {
		return err
	}
	for _, b := range active {
		w.queue.Add(b.ID)
	}
	jobs, err := w.jobs.Jobs(w.o.Namespace).List(labels.Everything())
	if err != nil {
		return err
	}
	for _, j := range jobs {
		w.enqueueObject(j)
	}
	return nil
}

// Observed is what the watcher knows of one build when it decides: the
// audit row, the build's Job and pods as the informers hold them, the Job
// controller's last FailedCreate message, and the time.
type Observed struct {
	Build        *store.Build // nil: no audit row
	Job          *batchv1.Job // nil: no Job
	Pods         []*corev1.Pod
	FailedCreate string // the Job's last FailedCreate event message; looked up only when it matters
	Now          time.Time
}

// Action is what the watcher does about a build.
type Action int

// Actions, in Decision.Action.
const (
	ActNone      Action = iota // nothing now (perhaps look again After)
	ActFail                    // fail the build with Reason and Message (and delete its Job when DeleteJob)
	ActFinish                  // apply Result, the runner's outcome read from its termination message
	ActDeleteJob               // delete the Job: its build is terminal, or has no audit row
)

// Decision is what Decide says to do about a build.
type Decision struct {
	Action    Action
	Reason    schema.Reason       // ActFail
	Message   string              // ActFail: for people
	Result    *schema.BuildResult // ActFinish
	DeleteJob bool                // ActFail: delete the Job too (its pod cannot run)
	After     time.Duration       // > 0: look again then
}

// Timeouts bound how long a build's pod may fail to start before the build fails.
type Timeouts struct {
	ImagePull     time.Duration
	Unschedulable time.Duration
}

// needsFailedCreate reports whether Decide would read o.FailedCreate: a
// running build whose Job has had no pod for longer than allowed.
func needsFailedCreate(o Observed, t Timeouts) bool {
	return o.Build != nil && o.Build.Status == schema.StatusRunning && o.Job != nil && o.Job.DeletionTimestamp == nil &&
		!finished(o.Job) && len(o.Pods) == 0 && !o.Now.Before(o.Job.CreationTimestamp.Add(t.Unschedulable))
}

// Decide compares a build's audit row with its Job and pods and says what to
// do. It reads nothing and changes nothing: sync gathers o and applies the
// decision.
func Decide(o Observed, t Timeouts) Decision {
	b, job := o.Build, o.Job
	switch {
	case b == nil:
		if job != nil && job.DeletionTimestamp == nil {
			return Decision{Action: ActDeleteJob}
		}
		return Decision{}
	case b.Status.Terminal():
		if job == nil || job.DeletionTimestamp != nil || finished(job) {
			return Decision{}
		}
		// A cancelled build's Job goes now. After a result the runner is
		// exiting on its own; only a Job still active a grace later goes.
		if b.Status != schema.StatusCancelled && b.FinishedAt != nil {
			if left := b.FinishedAt.Add(terminalGrace).Sub(o.Now); left > 0 {
				return Decision{After: left}
			}
		}
		return Decision{Action: ActDeleteJob}
	case b.Status != schema.StatusRunning:
		return Decision{} // pending: the launcher's River job owns it
	case job == nil || (job.DeletionTimestamp != nil && !finished(job)):
		return Decision{Action: ActFail, Reason: schema.ReasonJobDeleted, Message: "job deleted"}
	}
	if condition(job, batchv1.JobComplete) != nil {
		return finishedWithoutResult(o.Pods, "")
	}
	if c := condition(job, batchv1.JobFailed); c != nil {
		if c.Reason == batchv1.JobReasonDeadlineExceeded {
			d := int64(0)
			if job.Spec.ActiveDeadlineSeconds != nil {
				d = *job.Spec.ActiveDeadlineSeconds
			}
			return Decision{Action: ActFail, Reason: schema.ReasonDeadline, Message: fmt.Sprintf("timed out after %s", time.Duration(d)*time.Second)}
		}
		return finishedWithoutResult(o.Pods, c.Message)
	}
	if len(o.Pods) == 0 {
		return checkNoPods(o, t)
	}
	return checkPending(o, t)
}

// checkNoPods fails a build whose Job could not create its pod for longer
// than allowed (a missing service account, an admission webhook, a quota on
// pods), with the Job controller's own FailedCreate message.
func checkNoPods(o Observed, t Timeouts) Decision {
	left := o.Job.CreationTimestamp.Add(t.Unschedulable).Sub(o.Now)
	switch {
	case left > 0:
		return Decision{After: left}
	case o.FailedCreate == "":
		return Decision{After: t.Unschedulable} // no pod, no complaint: look again later
	}
	return Decision{Action: ActFail, Reason: schema.ReasonPodCreate, DeleteJob: true,
		Message: "the Job's pod could not be created: " + o.FailedCreate}
}

// finishedWithoutResult decides about a build whose Job ended while the
// build is still running: the runner's result never arrived.
func finishedWithoutResult(pods []*corev1.Pod, jobMsg string) Decision {
	for _, p := range pods {
		for _, cs := range p.Status.ContainerStatuses {
			t := cs.State.Terminated
			if t == nil {
				continue
			}
			if t.Reason == "OOMKilled" {
				return Decision{Action: ActFail, Reason: schema.ReasonOOM, Message: "out of memory (limit " + memoryLimit(p, cs.Name) + ")"}
			}
			var sum schema.TerminationSummary
			if json.Unmarshal([]byte(strings.TrimSpace(t.Message)), &sum) == nil && sum.Kiln == 1 {
				return Decision{Action: ActFinish, Result: &schema.BuildResult{Success: sum.Success, Cancelled: sum.Cancelled,
					Error: sum.Error, Reason: sum.Reason, CommitSHA: sum.CommitSHA, DurationMS: sum.DurationMS}}
			}
			msg := "runner exited without a result"
			if t.ExitCode != 0 {
				msg = fmt.Sprintf("runner exited with code %d without a result", t.ExitCode)
			}
			if m := strings.TrimSpace(t.Message); m != "" {
				msg += ": " + truncate(m, 1024)
			}
			return Decision{Action: ActFail, Reason: schema.ReasonPodFailed, Message: msg}
		}
	}
	msg := "runner exited without a result"
	if jobMsg != "" {
		msg += ": " + jobMsg
	}
	return Decision{Action: ActFail, Reason: schema.ReasonRunnerLost, Message: msg}
}

// checkPending fails builds whose pod cannot start: image pull errors or no
// node to schedule on, once they have lasted longer than allowed.
func checkPending(o Observed, t Timeouts) Decision {
	var recheck time.Duration
	for _, p := range o.Pods {
		if p.Status.Phase != corev1.PodPending {
			continue
		}
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			wt := cs.State.Waiting
			if wt == nil || (wt.Reason != "ErrImagePull" && wt.Reason != "ImagePullBackOff" && wt.Reason != "InvalidImageName") {
				continue
			}
			left := p.CreationTimestamp.Add(t.ImagePull).Sub(o.Now)
			if left <= 0 {
				return Decision{Action: ActFail, Reason: schema.ReasonImagePull, DeleteJob: true,
					Message: fmt.Sprintf("image pull failed for %s: %s: %s", cs.Image, wt.Reason, wt.Message)}
			}
			recheck = minPositive(recheck, left)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				left := min(c.LastTransitionTime.Add(t.Unschedulable).Sub(o.Now), p.CreationTimestamp.Add(t.Unschedulable).Sub(o.Now))
				if left <= 0 {
					return Decision{Action: ActFail, Reason: schema.ReasonUnschedulable, DeleteJob: true, Message: "unschedulable: " + c.Message}
				}
				recheck = minPositive(recheck, left)
			}
		}
	}
	return Decision{After: recheck}
}

// sync settles one build; a positive duration asks to be called again then.
func (w *Watcher) sync(ctx context.Context, id string) (time.Duration, error) {
	o, err := w.observe(ctx, id)
	if err != nil {
		return 0, err
	}
	t := Timeouts{ImagePull: w.o.ImagePullTimeout, Unschedulable: w.o.UnschedulableTimeout}
	if needsFailedCreate(o, t) {
		if o.FailedCreate, err = w.failedCreate(ctx, o.Job.Name); err != nil {
			return 0, err
		}
	}
	d := Decide(o, t)
	name := jobtemplates.JobName(id)
	switch d.Action {
	case ActDeleteJob:
		if o.Build == nil {
			w.logger.WarnContext(ctx, "deleting a Job without a build", "job", name)
		} else {
			w.logger.InfoContext(ctx, "deleting the Job of a terminal build", "build_id", id, "status", o.Build.Status, "job", name)
		}
		return 0, w.deleteJob(ctx, name)
	case ActFinish:
		_, err := w.o.Lifecycle.Finish(ctx, id, *d.Result, "termination message")
		return 0, err
	case ActFail:
		_, err := w.o.Lifecycle.Fail(ctx, id, d.Reason, d.Message)
		if errors.Is(err, lifecycle.ErrTerminal) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		if d.DeleteJob {
			return 0, w.deleteJob(ctx, name)
		}
		return 0, nil
	}
	return d.After, nil
}

// observe gathers what Decide needs about build id.
func (w *Watcher) observe(ctx context.Context, id string) (Observed, error) {
	o := Observed{Now: w.o.Now()}
	name := jobtemplates.JobName(id)
	job, err := w.jobs.Jobs(w.o.Namespace).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return o, err
	}
	o.Job = job
	b, err := store.GetBuild(ctx, w.o.Pool, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return o, nil
	case err != nil:
		return o, err
	}
	o.Build = b
	if b.Status != schema.StatusRunning {
		return o, nil
	}
	if o.Job == nil {
		// A running build's Job was created before the build became running,
		// so a synced lister without it means it is gone; ask the API server
		// itself before believing a lagging cache.
		live, err := w.o.Client.BatchV1().Jobs(w.o.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			o.Job = live
		} else if !apierrors.IsNotFound(err) {
			return o, err
		}
	}
	objs, err := w.pods.ByIndex(indexByBuild, jobtemplates.LabelValue(id))
	if err != nil {
		return o, err
	}
	for _, obj := range objs {
		if p, ok := obj.(*corev1.Pod); ok {
			o.Pods = append(o.Pods, p)
		}
	}
	return o, nil
}

// trimJob drops, from a Job the informer caches, its managed fields and its
// pod template (Decide reads the Job's metadata, its deadline and its
// status; the pods are watched themselves).
func trimJob(obj any) (any, error) {
	if j, ok := obj.(*batchv1.Job); ok {
		j.ManagedFields = nil
		j.Spec.Template = corev1.PodTemplateSpec{}
	}
	return obj, nil
}

// trimPod drops a cached pod's managed fields, its volumes and its
// containers' environment (Decide reads its status and its containers'
// names and limits).
func trimPod(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		p.ManagedFields = nil
		p.Spec.Volumes = nil
		for i := range p.Spec.Containers {
			p.Spec.Containers[i].Env, p.Spec.Containers[i].EnvFrom, p.Spec.Containers[i].VolumeMounts = nil, nil, nil
		}
		for i := range p.Spec.InitContainers {
			p.Spec.InitContainers[i].Env, p.Spec.InitContainers[i].EnvFrom, p.Spec.InitContainers[i].VolumeMounts = nil, nil, nil
		}
	}
	return obj, nil
}

// indexByBuild indexes cached pods by their build-id label, the value
// jobtemplates.BuildSelector selects on.
const indexByBuild = "build"

func buildOfObject(obj any) ([]string, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, nil
	}
	if id := m.GetLabels()[jobtemplates.LabelBuildID]; id != "" {
		return []string{id}, nil
	}
	return nil, nil
}

// failedCreate returns the message of the Job controller's latest
// FailedCreate event for Job name, or "".
func (w *Watcher) failedCreate(ctx context.Context, name string) (string, error) {
	evs, err := w.o.Client.CoreV1().Events(w.o.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Job,involvedObject.name=" + name})
	if err != nil {
		return "", err
	}
	msg := ""
	var last time.Time
	for _, ev := range evs.Items {
		if ev.Reason == "FailedCreate" && !ev.LastTimestamp.Time.Before(last) {
			msg, last = ev.Message, ev.LastTimestamp.Time
		}
	}
	return msg, nil
}

func (w *Watcher) deleteJob(ctx context.Context, name string) error {
	policy := metav1.DeletePropagationBackground
	err := w.o.Client.BatchV1().Jobs(w.o.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &policy})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func condition(j *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range j.Status.Conditions {
		if c := &j.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

func finished(j *batchv1.Job) bool {
	return condition(j, batchv1.JobComplete) != nil || condition(j, batchv1.JobFailed) != nil
}

func memoryLimit(p *corev1.Pod, container string) string {
	for _, c := range p.Spec.Containers {
		if c.Name == container {
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
				return q.String()
			}
		}
	}
	return "unknown"
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || b < a {
		return b
	}
	return a
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ReconcileArgs is the periodic River job that re-checks active builds. River
// runs periodic jobs from its leader, so one replica does it at a time.
type ReconcileArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return "kiln_reconcile" }

// ReconcileWorker runs ReconcileArgs.
type ReconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	watcher *Watcher
}

// Work implements river.Worker.
func (rw *ReconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	return rw.watcher.Reconcile(ctx)
}

// NewReconcileWorker returns the worker of ReconcileArgs for w.
func NewReconcileWorker(w *Watcher) *ReconcileWorker { return &ReconcileWorker{watcher: w} }

// PeriodicReconcile is the periodic job that inserts ReconcileArgs every
// interval (0: DefaultReconcileInterval).
func PeriodicReconcile(interval time.Duration) *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(cmp.Or(interval, DefaultReconcileInterval)), func() (river.JobArgs, *river.InsertOpts) {
		return ReconcileArgs{}, &river.InsertOpts{Queue: queue.QueueDispatch}
	}, &river.PeriodicJobOpts{ID: "kiln_reconcile"})
}
