package launcher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/launcher"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle/lifecycletest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	namespace  = "kiln-builds"
	retryAfter = 3 * time.Second
)

var (
	jobsGVR    = batchv1.SchemeGroupVersion.WithResource("jobs")
	secretsGVR = corev1.SchemeGroupVersion.WithResource("secrets")
	jobsGR     = k8sschema.GroupResource{Group: "batch", Resource: "jobs"}
)

// env is one test's launcher on its own schema and fake cluster.
type env struct {
	db   *pgtest.DB
	kube *fake.Clientset
	lc   *lifecycle.Lifecycle
	l    *launcher.Launcher

	mu       sync.Mutex
	launches []launcher.LaunchError // what OnLaunch was told, in order
}

// setup makes a launcher on a fake clientset that, like an API server,
// gives each created Job a UID (the Secret's owner reference needs it).
func setup(t *testing.T, edit ...func(*launcher.Options)) *env {
	t.Helper()
	t.Parallel()
	db := pgtest.New(t)
	e := &env{db: db, kube: fake.NewClientset(), lc: lifecycletest.New(t, db, lifecycle.Options{})}
	e.kube.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if j, ok := a.(k8stesting.CreateAction).GetObject().(*batchv1.Job); ok && j.UID == "" {
			j.UID = types.UID(uuid.NewString())
		}
		return false, nil, nil
	})
	o := launcher.Options{Client: e.kube, Pool: db.Pool, Lifecycle: e.lc, DispatcherURL: "http://kiln.kiln-system:8080",
		RetryAfter: retryAfter, OnLaunch: func(_ *store.Build, _ time.Duration, failed launcher.LaunchError) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.launches = append(e.launches, failed)
		}}
	for _, f := range edit {
		f(&o)
	}
	var err error
	e.l, err = launcher.New(o)
	require.NoError(t, err)
	return e
}

func (e *env) reported() []launcher.LaunchError {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]launcher.LaunchError(nil), e.launches...)
}

// project stores a project allowing maxConcurrent running builds.
func (e *env) project(t *testing.T, name string, maxConcurrent int) string {
	t.Helper()
	return apptest.Project(t, e.db.Pool, name, func(p *schema.Project) { p.MaxConcurrent = maxConcurrent }).ID
}

// pending stores a pending build of project; ids are UUIDv7, so builds
// made later are younger.
func (e *env) pending(t *testing.T, project string, spec ...schema.BuildSpec) *store.Build {
	t.Helper()
	id, err := uuid.NewV7()
	require.NoError(t, err)
	s := schema.BuildSpec{Prompt: "fix the bug"}
	if len(spec) > 0 {
		s = spec[0]
	}
	_, err = store.InsertBuild(context.Background(), e.db.Pool, store.NewBuild{ID: id.String(), ProjectID: project, Spec: s, RequestedBy: "test"})
	require.NoError(t, err)
	return e.get(t, id.String())
}

func (e *env) get(t *testing.T, id string) *store.Build {
	t.Helper()
	b, err := store.GetBuild(context.Background(), e.db.Pool, id)
	require.NoError(t, err)
	return b
}

// waiting returns a build's waiting reason and the info events that told it.
func (e *env) waiting(t *testing.T, id string) (reason schema.WaitingReason, infos []schema.InfoPayload) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT waiting_reason FROM builds WHERE id = $1`, id).Scan(&reason))
	evs, err := store.ListEvents(ctx, e.db.Pool, id, 0, 100)
	require.NoError(t, err)
	for _, ev := range evs {
		if p, ok := schema.PayloadAs[schema.InfoPayload](ev); ok {
			infos = append(infos, p)
		}
	}
	return reason, infos
}

// messages are the texts of infos.
func messages(infos []schema.InfoPayload) []string {
	var out []string
	for _, p := range infos {
		out = append(out, p.Message)
	}
	return out
}

func (e *env) jobs(t *testing.T) []batchv1.Job {
	t.Helper()
	l, err := e.kube.BatchV1().Jobs(namespace).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return l.Items
}

func (e *env) secrets(t *testing.T) []corev1.Secret {
	t.Helper()
	l, err := e.kube.CoreV1().Secrets(namespace).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return l.Items
}

// creates counts the create calls made of resource.
func (e *env) creates(resource string) int {
	n := 0
	for _, a := range e.kube.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

func (e *env) tokenIs(t *testing.T, id, token string) bool {
	t.Helper()
	rt, err := store.RunnerTokenOf(context.Background(), e.db.Pool, id, auth.Hash(token), 0)
	require.NoError(t, err)
	return rt.Match
}

// requireSnooze checks err is River's snooze for the launcher's RetryAfter.
func requireSnooze(t *testing.T, err error) {
	t.Helper()
	var snooze *river.JobSnoozeError
	require.ErrorAs(t, err, &snooze)
	assert.Equal(t, retryAfter, snooze.Duration)
}

// quotaExceeded is how the API refuses a create over a ResourceQuota.
func quotaExceeded(name string) error {
	return apierrors.NewForbidden(jobsGR, name,
		errors.New("exceeded quota: kiln-builds, requested: count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10"))
}

func TestAdmit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		c       store.Capacity
		max     int
		wantOK  bool
		want    schema.WaitingReason
		message string
	}{
		{"room everywhere", store.Capacity{InFlight: 3, ProjectInFlight: 0, MaxConcurrent: 2}, 10, true, "", ""},
		{"last project slot", store.Capacity{InFlight: 3, ProjectInFlight: 1, MaxConcurrent: 2}, 10, true, "", ""},
		{"last global slot", store.Capacity{InFlight: 9, ProjectInFlight: 0, MaxConcurrent: 2}, 10, true, "", ""},
		{"older pending first", store.Capacity{OlderPending: true, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitFIFO},
		{"FIFO before the project limit", store.Capacity{OlderPending: true, InFlight: 10, ProjectInFlight: 2, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitFIFO},
		{"FIFO before the global limit", store.Capacity{OlderPending: true, InFlight: 10, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitFIFO},
		{"session in use", store.Capacity{SessionBusy: true, InFlight: 1, ProjectInFlight: 1, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitSession},
		{"FIFO before the session", store.Capacity{OlderPending: true, SessionBusy: true, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitFIFO},
		{"project full", store.Capacity{InFlight: 2, ProjectInFlight: 2, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitProject},
		{"project over", store.Capacity{InFlight: 3, ProjectInFlight: 3, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitProject},
		{"project limit before the global one", store.Capacity{InFlight: 10, ProjectInFlight: 2, MaxConcurrent: 2}, 10, false, schema.WaitingProjectBusy, launcher.WaitProject},
		{"project allows none", store.Capacity{MaxConcurrent: 0}, 10, false, schema.WaitingProjectBusy, launcher.WaitProject},
		{"global full", store.Capacity{InFlight: 10, ProjectInFlight: 1, MaxConcurrent: 2}, 10, false, schema.WaitingCapacity, launcher.WaitGlobal},
		{"global over", store.Capacity{InFlight: 12, MaxConcurrent: 2}, 10, false, schema.WaitingCapacity, launcher.WaitGlobal},
		{"global of one, taken elsewhere", store.Capacity{InFlight: 1, MaxConcurrent: 1}, 1, false, schema.WaitingCapacity, launcher.WaitGlobal},
	} {
		ok, why := launcher.Admit(tc.c, tc.max)
		assert.Equal(t, tc.wantOK, ok, tc.name)
		assert.Equal(t, launcher.Wait{Reason: tc.want, Message: tc.message}, why, tc.name)
		if !ok {
			assert.Contains(t, schema.WaitingReasons, why.Reason, "%s: a known code", tc.name)
		}
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	kube := fake.NewClientset()
	db := pgtest.New(t)
	rc, err := queue.NewClient(db.Pool, queue.Options{Schema: db.Schema})
	require.NoError(t, err)
	lc, err := lifecycle.New(lifecycle.Options{Pool: db.Pool, River: rc})
	require.NoError(t, err)
	full := launcher.Options{Client: kube, Pool: db.Pool, Lifecycle: lc, DispatcherURL: "http://kiln:8080"}
	for name, edit := range map[string]func(*launcher.Options){
		"Client":        func(o *launcher.Options) { o.Client = nil },
		"Pool":          func(o *launcher.Options) { o.Pool = nil },
		"Lifecycle":     func(o *launcher.Options) { o.Lifecycle = nil },
		"DispatcherURL": func(o *launcher.Options) { o.DispatcherURL = "" },
	} {
		o := full
		edit(&o)
		_, err := launcher.New(o)
		assert.Error(t, err, name)
	}
	l, err := launcher.New(full)
	require.NoError(t, err)
	assert.Equal(t, "kiln-builds", l.Namespace())
}

func TestLaunchCreatesJobAndSecret(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1))

	require.NoError(t, e.l.Launch(ctx, b))

	jobs := e.jobs(t)
	require.Len(t, jobs, 1)
	job := jobs[0]
	assert.Equal(t, jobtemplates.JobName(b.ID), job.Name)
	id, ok := jobtemplates.BuildIDOf(&job)
	assert.True(t, ok)
	assert.Equal(t, b.ID, id)

	secrets := e.secrets(t)
	require.Len(t, secrets, 1)
	secret := secrets[0]
	assert.Equal(t, jobtemplates.SecretName(b.ID), secret.Name)
	require.Len(t, secret.OwnerReferences, 1)
	assert.Equal(t, job.UID, secret.OwnerReferences[0].UID, "the Secret goes with its Job")
	assert.Equal(t, "Job", secret.OwnerReferences[0].Kind)
	token := string(secret.Data[jobtemplates.SecretKeyRunnerToken])
	require.NotEmpty(t, token)
	assert.True(t, e.tokenIs(t, b.ID, token), "the runner token's hash is stored")
	assert.False(t, e.tokenIs(t, b.ID, token+"x"))

	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusRunning, got.Status)
	assert.Equal(t, job.Name, got.JobName)
	assert.Equal(t, 1, got.Attempt)
	assert.Equal(t, 1, e.creates("jobs"))
	assert.Equal(t, 1, e.creates("secrets"))
	assert.Equal(t, []launcher.LaunchError{""}, e.reported())
}

// A launch that died after the Secret was created but before the build was
// marked running is retried by River: the retry finds the Job and the
// Secret, keeps the token the pod may already hold, and finishes the start.
func TestLaunchRetryAfterCrashIsIdempotent(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1))

	// The first attempt's Secret is created, but its answer is lost.
	var attempt int
	var sawHash []bool // at each Secret create: does the stored hash match the Secret that exists, if any?
	e.kube.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		attempt++
		if existing, err := e.kube.Tracker().Get(secretsGVR, namespace, jobtemplates.SecretName(b.ID)); err == nil {
			tok := string(existing.(*corev1.Secret).Data[jobtemplates.SecretKeyRunnerToken])
			rt, err := store.RunnerTokenOf(ctx, e.db.Pool, b.ID, auth.Hash(tok), 0)
			require.NoError(t, err)
			sawHash = append(sawHash, rt.Match)
		}
		if attempt > 1 {
			return false, nil, nil
		}
		obj := a.(k8stesting.CreateAction).GetObject()
		require.NoError(t, e.kube.Tracker().Create(secretsGVR, obj, namespace))
		return true, nil, errors.New("connection reset by peer")
	})
	err := e.l.Launch(ctx, b)
	require.Error(t, err)
	var snooze *river.JobSnoozeError
	require.NotErrorAs(t, err, &snooze, "an error River retries with backoff")
	mid := e.get(t, b.ID)
	require.Equal(t, schema.StatusPending, mid.Status)
	require.Equal(t, jobtemplates.JobName(b.ID), mid.JobName, "still reserved")
	first := string(e.secrets(t)[0].Data[jobtemplates.SecretKeyRunnerToken])
	require.True(t, e.tokenIs(t, b.ID, first))

	require.NoError(t, e.l.Launch(ctx, mid))
	assert.Len(t, e.jobs(t), 1)
	secrets := e.secrets(t)
	require.Len(t, secrets, 1)
	assert.Equal(t, first, string(secrets[0].Data[jobtemplates.SecretKeyRunnerToken]), "the Secret is not replaced")
	assert.True(t, e.tokenIs(t, b.ID, first), "the first token is kept: the pod may hold it")
	for i, ok := range sawHash {
		assert.True(t, ok, "create %d: the stored hash was not the existing Secret's token: a runner holding it would be refused", i+1)
	}
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusRunning, got.Status)
	assert.Equal(t, 1, got.Attempt)
	assert.Equal(t, 2, e.creates("jobs"), "the second create found the Job (AlreadyExists)")
}

// The Job already exists but its Secret does not (the first attempt died
// between the two): the retry makes the Secret with a new token.
func TestLaunchRetryMakesAMissingSecret(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1))
	e.kube.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is sulking")
	})
	require.Error(t, e.l.Launch(ctx, b))
	require.Len(t, e.jobs(t), 1)
	require.Empty(t, e.secrets(t))
	e.kube.ReactionChain = e.kube.ReactionChain[1:]

	require.NoError(t, e.l.Launch(ctx, e.get(t, b.ID)))
	secrets := e.secrets(t)
	require.Len(t, secrets, 1)
	assert.Equal(t, e.jobs(t)[0].UID, secrets[0].OwnerReferences[0].UID)
	assert.True(t, e.tokenIs(t, b.ID, string(secrets[0].Data[jobtemplates.SecretKeyRunnerToken])))
	assert.Equal(t, schema.StatusRunning, e.get(t, b.ID).Status)
}

func TestLaunchFIFOWithinAProject(t *testing.T) {
	e := setup(t, func(o *launcher.Options) { o.MaxInFlight = 1 })
	ctx := context.Background()
	other := e.pending(t, e.project(t, "api", 1)) // older, of another project: admitted first
	web := e.project(t, "web", 2)
	older := e.pending(t, web)
	younger := e.pending(t, web)

	// The younger build's job asks first: the round admits the oldest
	// project's build, and the younger one waits behind its older sibling.
	for range 2 {
		requireSnooze(t, e.l.Launch(ctx, younger))
	}
	reason, infos := e.waiting(t, younger.ID)
	assert.Equal(t, schema.WaitingProjectBusy, reason)
	assert.Equal(t, []schema.InfoPayload{{Message: launcher.WaitFIFO, WaitingReason: schema.WaitingProjectBusy, QueuePosition: 2}},
		infos, "told once, not at every look")
	assert.NotEmpty(t, e.get(t, other.ID).JobName, "the round reserved the other project's build")

	// A slot frees: the younger build's job asks again, and the round gives
	// the slot to the older one.
	require.NoError(t, e.l.Launch(ctx, other))
	e.finish(t, other.ID)
	requireSnooze(t, e.l.Launch(ctx, younger))
	assert.NotEmpty(t, e.get(t, older.ID).JobName)
	require.NoError(t, e.l.Launch(ctx, older))
	e.finish(t, older.ID)
	require.NoError(t, e.l.Launch(ctx, younger))
	reason, _ = e.waiting(t, younger.ID)
	assert.Empty(t, reason, "the reservation clears the waiting reason")
	assert.Equal(t, schema.StatusRunning, e.get(t, younger.ID).Status)
	assert.Less(t, e.admitted(t, older.ID), e.admitted(t, younger.ID), "admitted in submission order")
	assert.True(t, e.reservedAt(t, older.ID).Before(e.reservedAt(t, younger.ID)), "and in time")
	assert.Len(t, e.jobs(t), 3)
}

func TestLaunchProjectLimit(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	web := e.project(t, "web", 1)
	first := e.pending(t, web)
	second := e.pending(t, web)
	elsewhere := e.pending(t, e.project(t, "api", 1))

	require.NoError(t, e.l.Launch(ctx, first))
	requireSnooze(t, e.l.Launch(ctx, second))
	reason, _ := e.waiting(t, second.ID)
	assert.Equal(t, schema.WaitingProjectBusy, reason)
	require.NoError(t, e.l.Launch(ctx, elsewhere), "another project has its own limit")

	_, err := e.lc.Finish(ctx, first.ID, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)
	require.NoError(t, e.l.Launch(ctx, second))
	assert.Equal(t, schema.StatusRunning, e.get(t, second.ID).Status)
}

func TestLaunchGlobalLimit(t *testing.T) {
	e := setup(t, func(o *launcher.Options) { o.MaxInFlight = 2 })
	ctx := context.Background()
	web, api := e.project(t, "web", 5), e.project(t, "api", 5)
	a1, a2 := e.pending(t, web), e.pending(t, web)
	b1 := e.pending(t, api)

	// a1's round fills both slots: a project's first build before anyone's
	// second, so api's b1 goes before web's a2.
	require.NoError(t, e.l.Launch(ctx, a1))
	requireSnooze(t, e.l.Launch(ctx, a2))
	reason, infos := e.waiting(t, a2.ID)
	assert.Equal(t, schema.WaitingCapacity, reason)
	assert.Equal(t, []schema.InfoPayload{{Message: launcher.WaitGlobal, WaitingReason: schema.WaitingCapacity, QueuePosition: 1}}, infos)
	require.NoError(t, e.l.Launch(ctx, b1), "reserved by a1's round")
	assert.Equal(t, schema.StatusRunning, e.get(t, b1.ID).Status)

	_, err := e.lc.Cancel(ctx, a1.ID, "by test")
	require.NoError(t, err)
	require.NoError(t, e.l.Launch(ctx, a2))
	assert.Equal(t, schema.StatusRunning, e.get(t, a2.ID).Status)
	assert.Len(t, e.jobs(t), 3, "the cancelled build's Job is the watcher's to delete")
}

// Admission is fair across projects: with one slot, projects take turns
// (the least recently admitted first), whatever their backlog, and a new
// project's first build goes at the next free slot.
func TestAdmissionRoundRobin(t *testing.T) {
	e := setup(t, func(o *launcher.Options) { o.MaxInFlight = 1 })
	ctx := context.Background()
	big, small := e.project(t, "big", 10), e.project(t, "small", 10)
	var builds []*store.Build
	for range 6 {
		builds = append(builds, e.pending(t, big))
	}
	for range 2 {
		builds = append(builds, e.pending(t, small))
	}
	byID := map[string]string{}
	for _, b := range builds {
		byID[b.ID] = b.ProjectID
	}
	var order []string
	// admitNext finishes the running build and runs a round, as Kick does.
	running := ""
	admitNext := func() {
		t.Helper()
		if running != "" {
			e.finish(t, running)
		}
		e.round(t)
		var id string
		require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT id FROM builds WHERE status = 'pending' AND job_name <> ''`).Scan(&id))
		require.NoError(t, e.l.Launch(ctx, e.get(t, id)))
		running = id
		order = append(order, map[string]string{big: "big", small: "small"}[byID[id]])
	}
	for range 3 {
		admitNext()
	}
	late := e.pending(t, e.project(t, "late", 1))
	byID[late.ID] = e.get(t, late.ID).ProjectID
	admitNext()
	assert.Equal(t, late.ID, running, "a new project's first build takes the next free slot")
	for range 4 {
		admitNext()
	}
	assert.Equal(t, []string{"big", "small", "big", "", "small", "big", "big", "big"}, order,
		"turns while both wait; the late project in between; then what is left")
}

// Reservations are decided under one lock: replicas launching at once never
// take more than the global maximum.
func TestLaunchReservationsAcrossReplicas(t *testing.T) {
	e := setup(t, func(o *launcher.Options) { o.MaxInFlight = 3 })
	second, err := launcher.New(launcher.Options{Client: e.kube, Pool: e.db.Pool, Lifecycle: e.lc,
		DispatcherURL: "http://kiln:8080", MaxInFlight: 3, RetryAfter: retryAfter})
	require.NoError(t, err)
	ctx := context.Background()
	var builds []*store.Build
	for i := range 8 {
		builds = append(builds, e.pending(t, e.project(t, fmt.Sprintf("p%d", i), 1)))
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		l := e.l
		if i%2 == 1 {
			l = second
		}
		wg.Go(func() { errs[i] = l.Launch(ctx, b) })
	}
	wg.Wait()
	launched := 0
	for i, err := range errs {
		if err == nil {
			launched++
			continue
		}
		requireSnooze(t, err)
		reason, _ := e.waiting(t, builds[i].ID)
		assert.Equal(t, schema.WaitingCapacity, reason)
	}
	assert.Equal(t, 3, launched)
	assert.Len(t, e.jobs(t), 3)
}

func TestLaunchQuotaExceeded(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1))
	refused := 0
	e.kube.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if refused > 0 {
			return false, nil, nil
		}
		refused++
		return true, nil, quotaExceeded(a.(k8stesting.CreateAction).GetObject().(*batchv1.Job).Name)
	})

	requireSnooze(t, e.l.Launch(ctx, b))
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusPending, got.Status)
	assert.Empty(t, got.JobName, "the reservation is given back")
	assert.True(t, e.reservedAt(t, b.ID).IsZero(), "its time too")
	reason, infos := e.waiting(t, b.ID)
	assert.Equal(t, schema.WaitingQuota, reason)
	require.Len(t, infos, 1)
	assert.True(t, strings.HasPrefix(infos[0].Message, launcher.WaitQuota+": "), infos[0].Message)
	assert.Contains(t, infos[0].Message, "exceeded quota: kiln-builds", "the API's words are kept")
	assert.Equal(t, schema.WaitingQuota, infos[0].WaitingReason)
	assert.Equal(t, 1, infos[0].QueuePosition)
	assert.Empty(t, e.jobs(t))
	assert.Equal(t, []launcher.LaunchError{launcher.LaunchQuota}, e.reported())

	require.NoError(t, e.l.Launch(ctx, got))
	assert.Equal(t, schema.StatusRunning, e.get(t, b.ID).Status)
	assert.Len(t, e.jobs(t), 1)
	assert.Equal(t, []launcher.LaunchError{launcher.LaunchQuota, ""}, e.reported())
}

func TestLaunchRefusedAsInvalid(t *testing.T) {
	for name, refusal := range map[string]error{
		"invalid": apierrors.NewInvalid(k8sschema.GroupKind{Group: "batch", Kind: "Job"}, "kiln-build-x",
			field.ErrorList{field.Invalid(field.NewPath("spec", "template", "spec", "nodeSelector"), "bad key", "a name must be valid")}),
		"bad request": apierrors.NewBadRequest("the server rejected our request"),
	} {
		t.Run(name, func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			b := e.pending(t, e.project(t, "web", 1))
			e.kube.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, refusal
			})
			require.NoError(t, e.l.Launch(ctx, b), "nothing for River to retry")
			got := e.get(t, b.ID)
			assert.Equal(t, schema.StatusFailed, got.Status)
			assert.Equal(t, schema.ReasonInvalidJob, got.Reason)
			assert.Contains(t, got.Error, "the Kubernetes API rejected the Job: ")
			assert.Contains(t, got.Error, refusal.(apierrors.APIStatus).Status().Message)
			assert.Zero(t, e.creates("secrets"))
			assert.Equal(t, []launcher.LaunchError{launcher.LaunchInvalid}, e.reported())
		})
	}
}

// Other create errors are River's to retry with backoff; the reservation is
// kept, so the retry goes straight to creating.
func TestLaunchTransientErrorRetried(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1))
	e.kube.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("apiserver restarting")
	})
	err := e.l.Launch(ctx, b)
	require.Error(t, err)
	var snooze *river.JobSnoozeError
	assert.NotErrorAs(t, err, &snooze)
	assert.True(t, apierrors.IsServiceUnavailable(err), "wrapped: %v", err)
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusPending, got.Status)
	assert.Equal(t, jobtemplates.JobName(b.ID), got.JobName)
	assert.Equal(t, []launcher.LaunchError{launcher.LaunchUnavailable}, e.reported())

	e.kube.ReactionChain = e.kube.ReactionChain[1:]
	require.NoError(t, e.l.Launch(ctx, got))
	assert.Equal(t, schema.StatusRunning, e.get(t, b.ID).Status)
}

func TestLaunchUnknownTemplate(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1), schema.BuildSpec{Prompt: "x", Template: "nope"})
	require.NoError(t, e.l.Launch(ctx, b))
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusFailed, got.Status)
	assert.Equal(t, schema.ReasonInvalidJob, got.Reason)
	assert.Contains(t, got.Error, `template "nope"`)
	assert.Zero(t, e.creates("jobs"))
	assert.Empty(t, e.reported(), "no attempt at creating a Job")
}

func TestLaunchUnrenderable(t *testing.T) {
	e := setup(t, func(o *launcher.Options) { o.Image = "not an image!" })
	b := e.pending(t, e.project(t, "web", 1))
	require.NoError(t, e.l.Launch(context.Background(), b))
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusFailed, got.Status)
	assert.Equal(t, schema.ReasonInvalidJob, got.Reason)
	assert.Contains(t, got.Error, "rendering the Job: ")
	assert.Zero(t, e.creates("jobs"))
}

func TestLaunchLeavesACancelledBuildAlone(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1))
	_, err := e.lc.Cancel(ctx, b.ID, "cancelled by alice")
	require.NoError(t, err)

	err = e.l.Launch(ctx, b) // b as the dispatch worker read it: still pending
	if err != nil {
		var snooze *river.JobSnoozeError
		require.ErrorAs(t, err, &snooze, "not an error River counts as a failed attempt")
	}
	assert.Empty(t, e.kube.Actions(), "the cluster is not touched")
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusCancelled, got.Status)
	assert.Equal(t, schema.ReasonCancelled, got.Reason)
	assert.Empty(t, got.JobName)
	reason, infos := e.waiting(t, b.ID)
	assert.Empty(t, reason)
	assert.Empty(t, infos)
}

// Cancelled while its Job was being made: the launch ends quietly and the
// build stays cancelled; the watcher deletes the Job.
func TestLaunchCancelledDuringCreate(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	b := e.pending(t, e.project(t, "web", 1))
	e.kube.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		_, err := e.lc.Cancel(ctx, b.ID, "cancelled by alice")
		require.NoError(t, err)
		return false, nil, nil
	})
	require.NoError(t, e.l.Launch(ctx, b))
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusCancelled, got.Status)
	assert.Equal(t, 0, got.Attempt)
	assert.Len(t, e.jobs(t), 1)
	assert.Equal(t, []launcher.LaunchError(nil), e.reported(), "not reported as a launch")
}

func TestClassifyLaunchError(t *testing.T) {
	t.Parallel()
	unexpected := apierrors.NewGenericServerResponse(502, "POST", jobsGR, "kiln-build-x", "bad gateway", 0, true)
	for _, tc := range []struct {
		name string
		err  error
		want launcher.LaunchError
	}{
		{"nil", nil, ""},
		{"already exists", apierrors.NewAlreadyExists(jobsGR, "kiln-build-x"), ""},
		{"quota", quotaExceeded("kiln-build-x"), launcher.LaunchQuota},
		{"quota, wrapped", fmt.Errorf("creating job: %w", quotaExceeded("kiln-build-x")), launcher.LaunchQuota},
		{"forbidden", apierrors.NewForbidden(jobsGR, "kiln-build-x", errors.New(`User "kiln" cannot create resource "jobs"`)), launcher.LaunchForbidden},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), launcher.LaunchForbidden},
		{"invalid", apierrors.NewInvalid(k8sschema.GroupKind{Group: "batch", Kind: "Job"}, "kiln-build-x", nil), launcher.LaunchInvalid},
		{"bad request", apierrors.NewBadRequest("no"), launcher.LaunchInvalid},
		{"not found", apierrors.NewNotFound(k8sschema.GroupResource{Resource: "namespaces"}, "kiln-builds"), launcher.LaunchNotFound},
		{"conflict", apierrors.NewConflict(jobsGR, "kiln-build-x", errors.New("changed")), launcher.LaunchConflict},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), launcher.LaunchThrottled},
		{"timeout", apierrors.NewTimeoutError("took too long", 1), launcher.LaunchTimeout},
		{"server timeout", apierrors.NewServerTimeout(jobsGR, "create", 1), launcher.LaunchTimeout},
		{"context deadline", fmt.Errorf("creating job: %w", context.DeadlineExceeded), launcher.LaunchTimeout},
		{"unavailable", apierrors.NewServiceUnavailable("down"), launcher.LaunchUnavailable},
		{"internal", apierrors.NewInternalError(errors.New("etcd")), launcher.LaunchUnavailable},
		{"unexpected response", unexpected, launcher.LaunchUnavailable},
		{"other", errors.New("dial tcp: connection refused"), launcher.LaunchOther},
		{"cancelled", context.Canceled, launcher.LaunchOther},
	} {
		assert.Equal(t, tc.want, launcher.ClassifyLaunchError(tc.err), tc.name)
		if tc.want != "" {
			assert.Contains(t, launcher.LaunchErrors, tc.want, "%s: listed in LaunchErrors", tc.name)
		}
	}
}

// reasons are the waiting reasons a build's info events told, in order,
// each with the queue position it had then.
func (e *env) reasons(t *testing.T, id string) []string {
	t.Helper()
	_, infos := e.waiting(t, id)
	var out []string
	for _, p := range infos {
		out = append(out, fmt.Sprintf("%s@%d", p.WaitingReason, p.QueuePosition))
	}
	return out
}

// admitted is the number a build's admission got (builds.admitted_seq).
func (e *env) admitted(t *testing.T, id string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT admitted_seq FROM builds WHERE id = $1`, id).Scan(&n))
	return n
}

// reservedAt is when a build was given its launch slot (zero: it holds none).
func (e *env) reservedAt(t *testing.T, id string) time.Time {
	t.Helper()
	var at *time.Time
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT reserved_at FROM builds WHERE id = $1`, id).Scan(&at))
	if at == nil {
		return time.Time{}
	}
	return *at
}

// round runs one admission round, as Run does when kicked.
func (e *env) round(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.l.Run(ctx) }()
	e.l.Kick()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, e.db.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM builds WHERE status = 'pending' AND job_name <> ''`).Scan(&n))
		return n > 0
	}, 10*time.Second, 5*time.Millisecond)
	cancel()
	<-done
}

// finish ends a running build, freeing its slots.
func (e *env) finish(t *testing.T, id string) {
	t.Helper()
	_, err := e.lc.Finish(context.Background(), id, schema.BuildResult{Success: true}, "test")
	require.NoError(t, err)
}

// Three builds of one project allowed one running build, while the global
// limit is reached too. Each build tells the reason it waits for whenever
// that changes: the first waits for the dispatcher's capacity (its project
// would take it), the two behind it for their project; when capacity frees
// the first launches and the others still wait for their project; when the
// project frees, its next build takes the global slot before another
// project's build that has one in flight already (which waits for
// capacity), and the last waits for its project until its turn.
func TestWaitingReasonsAsCapacityFrees(t *testing.T) {
	e := setup(t, func(o *launcher.Options) { o.MaxInFlight = 2 })
	ctx := context.Background()
	api, web := e.project(t, "api", 5), e.project(t, "web", 1)
	x1, x2 := e.pending(t, api), e.pending(t, api)
	require.NoError(t, e.l.Launch(ctx, x1))
	require.NoError(t, e.l.Launch(ctx, x2))
	a, b, c := e.pending(t, web), e.pending(t, web), e.pending(t, web)
	look := func(builds ...*store.Build) {
		t.Helper()
		for _, bl := range builds {
			requireSnooze(t, e.l.Launch(ctx, bl))
		}
	}
	position := func(bl *store.Build) (schema.WaitingReason, int) {
		t.Helper()
		got := e.get(t, bl.ID)
		return got.WaitingReason, got.QueuePosition
	}

	// Everything is taken: a by the global limit, b and c by FIFO behind it.
	look(c, b, a, a, b, c)
	assert.Equal(t, []string{"capacity@1"}, e.reasons(t, a.ID))
	assert.Equal(t, []string{"project_busy@2"}, e.reasons(t, b.ID))
	assert.Equal(t, []string{"project_busy@3"}, e.reasons(t, c.ID))

	// A global slot frees: b and c still wait behind a, which launches.
	e.finish(t, x1.ID)
	look(c, b)
	require.NoError(t, e.l.Launch(ctx, a))
	r, pos := position(a)
	assert.Equal(t, schema.StatusRunning, e.get(t, a.ID).Status)
	assert.Equal(t, schema.WaitingReason(""), r, "a running build waits for nothing")
	assert.Zero(t, pos, "a running build has no queue position")
	look(b, c) // now the project's limit holds them: still project_busy, no new event
	r, pos = position(b)
	assert.Equal(t, schema.WaitingProjectBusy, r)
	assert.Equal(t, 1, pos, "b is next")
	_, pos = position(c)
	assert.Equal(t, 2, pos)

	// a ends and another project's build asks for the freed slot, but b's
	// project has nothing in flight and x3's has one: b goes first, x3
	// waits for capacity.
	e.finish(t, a.ID)
	x3 := e.pending(t, api)
	requireSnooze(t, e.l.Launch(ctx, x3))
	look(c)
	require.NoError(t, e.l.Launch(ctx, b), "reserved by x3's round")
	assert.Equal(t, []string{"capacity@1"}, e.reasons(t, x3.ID))

	// A global slot frees: x3 launches (c's project is full), then c.
	e.finish(t, x2.ID)
	look(c)
	require.NoError(t, e.l.Launch(ctx, x3))
	e.finish(t, b.ID)
	require.NoError(t, e.l.Launch(ctx, c))

	// What each went through, from first to last look.
	assert.Equal(t, []string{"capacity@1"}, e.reasons(t, a.ID))
	assert.Equal(t, []string{"project_busy@2"}, e.reasons(t, b.ID))
	assert.Equal(t, []string{"project_busy@3"}, e.reasons(t, c.ID))
	for _, bl := range []*store.Build{a, b, c} {
		_, infos := e.waiting(t, bl.ID)
		for _, p := range infos {
			want := map[schema.WaitingReason][]string{
				schema.WaitingCapacity:    {launcher.WaitGlobal},
				schema.WaitingProjectBusy: {launcher.WaitFIFO, launcher.WaitProject},
			}[p.WaitingReason]
			assert.Contains(t, want, p.Message, "the text matches the code")
		}
		got := e.get(t, bl.ID)
		assert.NotEqual(t, schema.StatusPending, got.Status, "launched")
		assert.Empty(t, got.WaitingReason)
		assert.Zero(t, got.QueuePosition)
	}
	r, _ = e.waiting(t, c.ID)
	assert.Empty(t, r, "the reservation cleared the recorded reason")
}

// A Job the quota refuses again and again is told once; a build that
// waited for capacity before tells the change to quota, and its launch
// clears it.
func TestWaitingForQuotaIsToldOnce(t *testing.T) {
	e := setup(t, func(o *launcher.Options) { o.MaxInFlight = 1 })
	ctx := context.Background()
	busy := e.pending(t, e.project(t, "api", 1))
	require.NoError(t, e.l.Launch(ctx, busy))
	b := e.pending(t, e.project(t, "web", 1))
	requireSnooze(t, e.l.Launch(ctx, b))
	e.finish(t, busy.ID)

	refusals := 3
	e.kube.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if refusals == 0 {
			return false, nil, nil
		}
		refusals--
		return true, nil, quotaExceeded(a.(k8stesting.CreateAction).GetObject().(*batchv1.Job).Name)
	})
	for range 3 {
		requireSnooze(t, e.l.Launch(ctx, e.get(t, b.ID)))
		got := e.get(t, b.ID)
		assert.Equal(t, schema.WaitingQuota, got.WaitingReason)
		assert.Equal(t, 1, got.QueuePosition)
		assert.Empty(t, got.JobName)
	}
	assert.Equal(t, []string{"capacity@1", "quota@1"}, e.reasons(t, b.ID), "told once, not at every refusal")

	require.NoError(t, e.l.Launch(ctx, e.get(t, b.ID)))
	got := e.get(t, b.ID)
	assert.Equal(t, schema.StatusRunning, got.Status)
	reason, _ := e.waiting(t, b.ID)
	assert.Empty(t, reason)
	assert.Equal(t, []string{"capacity@1", "quota@1"}, e.reasons(t, b.ID))
}

// Builds of a project that still provisions wait for it, each told once
// with its place in the queue; once the project is ready they launch in
// order, the second now waiting for its project's limit.
func TestWaitingForProvisioning(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	web := e.project(t, "web", 1)
	require.NoError(t, store.SetProjectStatus(ctx, e.db.Pool, web, []schema.ProjectStatus{schema.ProjectReady},
		string(schema.ProjectProvisioning), "", ""))
	first, second := e.pending(t, web), e.pending(t, web)
	for range 2 {
		requireSnooze(t, e.l.Launch(ctx, second))
		requireSnooze(t, e.l.Launch(ctx, first))
	}
	assert.Empty(t, e.jobs(t))
	assert.Equal(t, []string{"project_provisioning@1"}, e.reasons(t, first.ID))
	assert.Equal(t, []string{"project_provisioning@2"}, e.reasons(t, second.ID))
	_, infos := e.waiting(t, first.ID)
	assert.Equal(t, launcher.WaitProvisioning, infos[0].Message)
	assert.Equal(t, schema.WaitingProjectProvisioning, e.get(t, second.ID).WaitingReason)

	require.NoError(t, store.SetProjectStatus(ctx, e.db.Pool, web, []schema.ProjectStatus{schema.ProjectProvisioning},
		string(schema.ProjectReady), "", ""))
	requireSnooze(t, e.l.Launch(ctx, second))
	require.NoError(t, e.l.Launch(ctx, first))
	assert.Equal(t, schema.StatusRunning, e.get(t, first.ID).Status)
	assert.Equal(t, []string{"project_provisioning@2", "project_busy@2"}, e.reasons(t, second.ID),
		"the FIFO wait behind first, which had not launched yet")
	requireSnooze(t, e.l.Launch(ctx, second))
	assert.Equal(t, []string{"project_provisioning@2", "project_busy@2"}, e.reasons(t, second.ID),
		"the project's limit is project_busy too: no new event")
	assert.Equal(t, 1, e.get(t, second.ID).QueuePosition)
}

// The queue position counts the project's pending builds up to this one,
// reserved ones included (they launch first); other projects' builds and
// builds that left the queue do not count, and only a pending build has one.
func TestQueuePosition(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	web := e.project(t, "web", 1)
	e.pending(t, e.project(t, "api", 1))
	done, reserved, cancelled, a, b := e.pending(t, web), e.pending(t, web), e.pending(t, web), e.pending(t, web), e.pending(t, web)
	require.NoError(t, e.l.Launch(ctx, done))
	e.finish(t, done.ID)
	require.NoError(t, pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		return store.Admit(ctx, tx, []store.Admission{{ID: reserved.ID, ProjectID: web}}, jobtemplates.JobName)
	}))
	_, err := e.lc.Cancel(ctx, cancelled.ID, "by test")
	require.NoError(t, err)

	for want, bl := range map[int]*store.Build{0: done, 1: reserved, 2: a, 3: b} {
		assert.Equal(t, want, e.get(t, bl.ID).QueuePosition, bl.ID)
	}
	assert.Zero(t, e.get(t, cancelled.ID).QueuePosition)
	page, _, err := store.ListBuildSummaries(ctx, e.db.Pool, store.ListBuildsParams{ProjectID: web, Limit: 10})
	require.NoError(t, err)
	positions := map[string]int{}
	for _, s := range page {
		positions[s.ID] = s.QueuePosition
	}
	assert.Equal(t, map[string]int{done.ID: 0, reserved.ID: 1, cancelled.ID: 0, a.ID: 2, b.ID: 3}, positions)
}

// A follow-up of a build that never started the agent fails at once, with
// no Job, unless it asked for fallback fresh; one of a build with a session
// launches (the runner checks the session is still in the pod).
func TestFollowupWithoutSessionFailsWithoutAJob(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	web := e.project(t, "web", 2)
	never := e.pending(t, web)
	_, err := store.TransitionBuild(ctx, e.db.Pool, never.ID, store.Transition{To: schema.StatusCancelled,
		Reason: schema.ReasonCancelled, Error: "cancelled before it ran"})
	require.NoError(t, err)
	ran := e.pending(t, web)
	_, err = store.TransitionBuild(ctx, e.db.Pool, ran.ID, store.Transition{To: schema.StatusCompleted,
		Result: &schema.BuildResult{Success: true, SessionID: "0b4f1f9e-6f43-4d8e-9a31-1b1f0b1c2d3e"}})
	require.NoError(t, err)

	followup := func(parent string, fb schema.Fallback) *store.Build {
		id, err := uuid.NewV7()
		require.NoError(t, err)
		_, err = store.InsertBuild(ctx, e.db.Pool, store.NewBuild{ID: id.String(), ProjectID: web, ParentID: parent,
			Spec: schema.BuildSpec{Prompt: "and now the tests", Fallback: fb}, RequestedBy: "test"})
		require.NoError(t, err)
		return e.get(t, id.String())
	}
	f := followup(never.ID, schema.FallbackNone)
	require.NoError(t, e.l.Launch(ctx, f))
	got := e.get(t, f.ID)
	assert.Equal(t, schema.StatusFailed, got.Status)
	assert.Equal(t, schema.ReasonSessionUnavailable, got.Reason)
	assert.Contains(t, got.Error, "build "+never.ID+" never started the agent")
	assert.Empty(t, e.jobs(t), "no Job for a follow-up that cannot run")

	fresh := followup(never.ID, schema.FallbackFresh)
	require.NoError(t, e.l.Launch(ctx, fresh))
	assert.Equal(t, schema.StatusRunning, e.get(t, fresh.ID).Status, "fallback fresh runs")
	resumed := followup(ran.ID, schema.FallbackNone)
	require.NoError(t, e.l.Launch(ctx, resumed))
	assert.Equal(t, schema.StatusRunning, e.get(t, resumed.ID).Status, "a session to continue: it launches")
	assert.Len(t, e.jobs(t), 2)
}

// Two follow-ups of one build on a project that allows two at once do not
// resume its session together: the second waits (project_busy) until the
// first has ended, while a build that is no follow-up launches beside it.
func TestFollowupsOfOneSessionDoNotOverlap(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	web := e.project(t, "web", 3)
	parent := e.pending(t, web)
	_, err := store.TransitionBuild(ctx, e.db.Pool, parent.ID, store.Transition{To: schema.StatusCompleted,
		Result: &schema.BuildResult{Success: true, SessionID: "0b4f1f9e-6f43-4d8e-9a31-1b1f0b1c2d3e"}})
	require.NoError(t, err)
	followup := func() *store.Build {
		id, err := uuid.NewV7()
		require.NoError(t, err)
		_, err = store.InsertBuild(ctx, e.db.Pool, store.NewBuild{ID: id.String(), ProjectID: web, ParentID: parent.ID,
			Spec: schema.BuildSpec{Prompt: "more"}, RequestedBy: "test"})
		require.NoError(t, err)
		return e.get(t, id.String())
	}
	first := followup()
	require.NoError(t, e.l.Launch(ctx, first))
	second := followup()
	requireSnooze(t, e.l.Launch(ctx, second))
	_, infos := e.waiting(t, second.ID)
	require.NotEmpty(t, infos)
	assert.Equal(t, launcher.WaitSession, infos[len(infos)-1].Message)
	assert.Equal(t, schema.WaitingProjectBusy, e.get(t, second.ID).WaitingReason)

	other := e.pending(t, web)
	requireSnooze(t, e.l.Launch(ctx, other)) // FIFO: second is older and waits
	e.finish(t, first.ID)
	require.NoError(t, e.l.Launch(ctx, second))
	assert.Equal(t, schema.StatusRunning, e.get(t, second.ID).Status, "the session is free again")
	require.NoError(t, e.l.Launch(ctx, other))
	assert.Equal(t, schema.StatusRunning, e.get(t, other.ID).Status, "a build that is no follow-up runs beside it")
}

// While admission rounds run, a new build's first look with every slot
// taken records why it waits and sleeps without taking the launch lock: a
// backlog's thousands of first looks do not queue on it (here another
// replica holds the lock throughout). With a slot free it does take the
// lock, and waits for it.
func TestFirstLookWithoutASlotSkipsTheLock(t *testing.T) {
	var rc *river.Client[pgx.Tx]
	e := setup(t, func(o *launcher.Options) {
		var err error
		rc, err = queue.NewClient(o.Pool, queue.Options{})
		require.NoError(t, err)
		o.River, o.MaxInFlight, o.WaitRecheck, o.AdmitInterval = rc, 1, time.Minute, time.Hour
	})
	ctx := context.Background()
	web := e.project(t, "web", 5)
	first := e.pending(t, web)
	require.NoError(t, e.l.Launch(ctx, first))
	runCtx, stopRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.l.Run(runCtx) }()
	t.Cleanup(func() { stopRun(); <-done })
	require.Eventually(t, func() bool { return e.l.Looping() }, 5*time.Second, time.Millisecond)

	tx, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	require.NoError(t, store.LockLaunches(ctx, tx))

	late := e.pending(t, e.project(t, "api", 5))
	lookCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = e.l.Launch(lookCtx, late)
	var snooze *river.JobSnoozeError
	require.ErrorAs(t, err, &snooze, "the first look returned while the lock was held")
	assert.Equal(t, time.Minute, snooze.Duration, "it sleeps until a round wakes it")
	reason, _ := e.waiting(t, late.ID)
	assert.Equal(t, schema.WaitingCapacity, reason)

	// A slot frees: the next look takes the lock, so it waits for the
	// other replica to let go.
	e.finish(t, first.ID)
	looked := make(chan error, 1)
	go func() { looked <- e.l.Launch(ctx, late) }()
	select {
	case err := <-looked:
		t.Fatalf("launched under another replica's lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, <-looked)
	assert.Equal(t, schema.StatusRunning, e.get(t, late.ID).Status)
}

// While rounds run, a waiting build's own look is a safety net, and with a
// backlog it comes less often: each sleeps (builds waiting) / RecheckRate
// when that is longer than WaitRecheck, so W builds look RecheckRate
// times a second together, however large W is.
func TestWaitRecheckGrowsWithTheBacklog(t *testing.T) {
	e := setup(t, func(o *launcher.Options) {
		rc, err := queue.NewClient(o.Pool, queue.Options{})
		require.NoError(t, err)
		o.River, o.MaxInFlight, o.WaitRecheck, o.RecheckRate, o.AdmitInterval = rc, 1, time.Second, 2, time.Hour
	})
	ctx := context.Background()
	web := e.project(t, "web", 5)
	require.NoError(t, e.l.Launch(ctx, e.pending(t, web)))
	runCtx, stopRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.l.Run(runCtx) }()
	t.Cleanup(func() { stopRun(); <-done })
	require.Eventually(t, func() bool { return e.l.Looping() }, 5*time.Second, time.Millisecond)

	var backlog []*store.Build
	for range 7 {
		backlog = append(backlog, e.pending(t, web))
	}
	var snooze *river.JobSnoozeError
	require.ErrorAs(t, e.l.Launch(ctx, backlog[6]), &snooze)
	assert.Equal(t, 3500*time.Millisecond, snooze.Duration, "7 waiting at 2 looks a second")
}
