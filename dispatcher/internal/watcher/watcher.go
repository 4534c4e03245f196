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
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// terminalGrace is how long a Job may keep running after its build's result.
const terminalGrace = time.Minute

// ResultSink applies a build result (the runner protocol server implements it).
type ResultSink interface {
	Accept(ctx context.Context, id string, res schema.BuildResult, source string) (schema.ResultAck, error)
}

// Options configures New.
type Options struct {
	Client               kubernetes.Interface // required
	Pool                 *pgxpool.Pool        // required
	Lifecycle            *lifecycle.Lifecycle // required
	Results              ResultSink           // required
	Namespace            string               // default "kiln-builds"
	ImagePullTimeout     time.Duration        // how long image pull errors may last; default 2m
	UnschedulableTimeout time.Duration        // how long a pod may stay unschedulable; default 5m
	Workers              int                  // sync goroutines; default 4
	Logger               *slog.Logger
	// OnFailure is told of each failure the watcher decides, with a short reason code; may be nil.
	OnFailure func(b *store.Build, reason string)
}

// Watcher tracks build Jobs.
type Watcher struct {
	o       Options
	logger  *slog.Logger
	factory informers.SharedInformerFactory
	jobs    batchlisters.JobLister
	pods    corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]
	synced  []cache.InformerSynced
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// New returns a Watcher; Start runs it.
func New(o Options) (*Watcher, error) {
	if o.Client == nil || o.Pool == nil || o.Lifecycle == nil || o.Results == nil {
		return nil, errors.New("watcher: Client, Pool, Lifecycle and Results are required")
	}
	o.Namespace = cmp.Or(o.Namespace, "kiln-builds")
	o.ImagePullTimeout = cmp.Or(o.ImagePullTimeout, 2*time.Minute)
	o.UnschedulableTimeout = cmp.Or(o.UnschedulableTimeout, 5*time.Minute)
	o.Workers = cmp.Or(o.Workers, 4)
	w := &Watcher{o: o, logger: cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "watcher")}
	w.factory = informers.NewSharedInformerFactoryWithOptions(o.Client, 10*time.Minute,
		informers.WithNamespace(o.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = jobtemplates.Selector().String() }))
	ji := w.factory.Batch().V1().Jobs()
	pi := w.factory.Core().V1().Pods()
	w.jobs, w.pods = ji.Lister(), pi.Lister()
	w.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kiln-builds"})
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
	return w, nil
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
// starts the sync workers.
func (w *Watcher) Start(ctx context.Context) error {
	ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	w.factory.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), w.synced...) {
		w.Stop()
		return errors.New("watcher: informer caches did not sync within a minute")
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

// Stop stops the workers and informers.
func (w *Watcher) Stop() {
	if w.cancel != nil {
		w.cancel()
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

// sync settles one build; a positive duration asks to be called again then.
func (w *Watcher) sync(ctx context.Context, id string) (time.Duration, error) {
	name := jobtemplates.JobName(id)
	job, err := w.jobs.Jobs(w.o.Namespace).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	b, err := store.GetBuild(ctx, w.o.Pool, id)
	if errors.Is(err, store.ErrNotFound) {
		if job != nil {
			w.logger.WarnContext(ctx, "deleting a Job without a build", "job", name)
			return 0, w.deleteJob(ctx, name)
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}

	if b.Status.Terminal() {
		if job == nil || job.DeletionTimestamp != nil || finished(job) {
			return 0, nil
		}
		// A cancelled build's Job goes now. After a result the runner is
		// exiting on its own; only a Job still active a grace later goes.
		if b.Status != schema.StatusCancelled && b.FinishedAt != nil {
			if left := b.FinishedAt.Add(terminalGrace).Sub(time.Now()); left > 0 {
				return left, nil
			}
		}
		w.logger.InfoContext(ctx, "deleting the Job of a terminal build", "build_id", id, "status", b.Status, "job", name)
		return 0, w.deleteJob(ctx, name)
	}
	if b.Status != schema.StatusRunning {
		return 0, nil // pending: the launcher's River job owns it
	}
	if job == nil {
		// A running build's Job was created before the build became running,
		// so a synced lister without it means it is gone; ask the API server
		// itself before believing a lagging cache.
		live, err := w.o.Client.BatchV1().Jobs(w.o.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			job = live
		} else if !apierrors.IsNotFound(err) {
			return 0, err
		}
	}
	if job == nil || (job.DeletionTimestamp != nil && !finished(job)) {
		return 0, w.fail(ctx, b, "job_deleted", "job deleted", false)
	}
	pods, err := w.pods.Pods(w.o.Namespace).List(jobtemplates.BuildSelector(id))
	if err != nil {
		return 0, err
	}
	if c := condition(job, batchv1.JobComplete); c != nil {
		return 0, w.finishedWithoutResult(ctx, b, job, pods, "")
	}
	if c := condition(job, batchv1.JobFailed); c != nil {
		if c.Reason == batchv1.JobReasonDeadlineExceeded {
			d := int64(0)
			if job.Spec.ActiveDeadlineSeconds != nil {
				d = *job.Spec.ActiveDeadlineSeconds
			}
			return 0, w.fail(ctx, b, "timeout", fmt.Sprintf("timed out after %s", time.Duration(d)*time.Second), false)
		}
		return 0, w.finishedWithoutResult(ctx, b, job, pods, c.Message)
	}
	if len(pods) == 0 {
		return w.checkNoPods(ctx, b, job)
	}
	return w.checkPending(ctx, b, pods)
}

// checkNoPods fails a build whose Job could not create its pod for longer
// than allowed (a missing service account, an admission webhook, a quota on
// pods), with the Job controller's own FailedCreate message.
func (w *Watcher) checkNoPods(ctx context.Context, b *store.Build, job *batchv1.Job) (time.Duration, error) {
	left := job.CreationTimestamp.Add(w.o.UnschedulableTimeout).Sub(time.Now())
	if left > 0 {
		return left, nil
	}
	evs, err := w.o.Client.CoreV1().Events(w.o.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Job,involvedObject.name=" + job.Name})
	if err != nil {
		return 0, err
	}
	msg := ""
	var last time.Time
	for _, ev := range evs.Items {
		if ev.Reason == "FailedCreate" && !ev.LastTimestamp.Time.Before(last) {
			msg, last = ev.Message, ev.LastTimestamp.Time
		}
	}
	if msg == "" {
		return w.o.UnschedulableTimeout, nil // no pod, no complaint: look again later
	}
	return 0, w.fail(ctx, b, "pod_create", "the Job's pod could not be created: "+msg, true)
}

// finishedWithoutResult settles a build whose Job ended while the build is
// still running: the runner's result never arrived.
func (w *Watcher) finishedWithoutResult(ctx context.Context, b *store.Build, job *batchv1.Job, pods []*corev1.Pod, jobMsg string) error {
	for _, p := range pods {
		for _, cs := range p.Status.ContainerStatuses {
			t := cs.State.Terminated
			if t == nil {
				continue
			}
			if t.Reason == "OOMKilled" {
				return w.fail(ctx, b, "oom", "out of memory (limit "+memoryLimit(p, cs.Name)+")", false)
			}
			var sum schema.TerminationSummary
			if json.Unmarshal([]byte(strings.TrimSpace(t.Message)), &sum) == nil && sum.Kiln == 1 {
				res := schema.BuildResult{Success: sum.Success, Cancelled: sum.Cancelled, Error: sum.Error,
					CommitSHA: sum.CommitSHA, DurationMS: sum.DurationMS}
				_, err := w.o.Results.Accept(ctx, b.ID, res, "termination message")
				return err
			}
			msg := "runner exited without a result"
			if t.ExitCode != 0 {
				msg = fmt.Sprintf("runner exited with code %d without a result", t.ExitCode)
			}
			if m := strings.TrimSpace(t.Message); m != "" {
				msg += ": " + truncate(m, 1024)
			}
			return w.fail(ctx, b, "no_result", msg, false)
		}
	}
	msg := "runner exited without a result"
	if jobMsg != "" {
		msg += ": " + jobMsg
	}
	return w.fail(ctx, b, "no_result", msg, false)
}

// checkPending fails builds whose pod cannot start: image pull errors or no
// node to schedule on, once they have lasted longer than allowed.
func (w *Watcher) checkPending(ctx context.Context, b *store.Build, pods []*corev1.Pod) (time.Duration, error) {
	var recheck time.Duration
	now := time.Now()
	for _, p := range pods {
		if p.Status.Phase != corev1.PodPending {
			continue
		}
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			wt := cs.State.Waiting
			if wt == nil || (wt.Reason != "ErrImagePull" && wt.Reason != "ImagePullBackOff" && wt.Reason != "InvalidImageName") {
				continue
			}
			left := p.CreationTimestamp.Add(w.o.ImagePullTimeout).Sub(now)
			if left <= 0 {
				return 0, w.fail(ctx, b, "image_pull", fmt.Sprintf("image pull failed for %s: %s: %s", cs.Image, wt.Reason, wt.Message), true)
			}
			recheck = minPositive(recheck, left)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				left := c.LastTransitionTime.Add(w.o.UnschedulableTimeout).Sub(now)
				if p.CreationTimestamp.Add(w.o.UnschedulableTimeout).Sub(now) < left {
					left = p.CreationTimestamp.Add(w.o.UnschedulableTimeout).Sub(now)
				}
				if left <= 0 {
					return 0, w.fail(ctx, b, "unschedulable", "unschedulable: "+c.Message, true)
				}
				recheck = minPositive(recheck, left)
			}
		}
	}
	return recheck, nil
}

func (w *Watcher) fail(ctx context.Context, b *store.Build, code, reason string, deleteJob bool) error {
	nb, err := w.o.Lifecycle.TransitionNow(ctx, w.o.Pool, b.ID, store.Transition{To: schema.StatusFailed, Error: reason})
	if errors.Is(err, store.ErrTerminal) {
		return nil
	}
	if err != nil {
		return err
	}
	w.logger.InfoContext(ctx, "build failed", "build_id", b.ID, "reason", reason)
	if w.o.OnFailure != nil {
		w.o.OnFailure(nb, code)
	}
	if deleteJob {
		return w.deleteJob(ctx, jobtemplates.JobName(b.ID))
	}
	return nil
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
	Watcher *Watcher
}

// Work implements river.Worker.
func (rw *ReconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	return rw.Watcher.Reconcile(ctx)
}
