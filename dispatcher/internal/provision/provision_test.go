package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/workspace"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/gitserver"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/servers"
)

// The package's tests provision on a real control plane (kubebox) and real
// add-on servers: a password-checking PostgreSQL and a redis-server.
var (
	cluster *kbtest.Cluster
	pg      *servers.Postgres
	rd      *servers.Redis
)

const buildsNS = "kiln-builds"

func TestMain(m *testing.M) {
	code := func() int {
		c, stop, err := kbtest.Up(map[string]string{workspace.DefaultImage: "/bin/sh"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cluster = c
		ok := false
		defer func() { stop(ok) }()
		if pg, err = servers.StartPostgres(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pg.Stop()
		if rd, err = servers.StartRedis(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer rd.Stop()
		if _, err := c.Client.CoreV1().Namespaces().Create(context.Background(),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: buildsNS}}, metav1.CreateOptions{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		code := m.Run()
		ok = code == 0
		return code
	}()
	os.Exit(code)
}

// env is one test's provisioning: its own schema, River client and Service.
type env struct {
	t      *testing.T
	ctx    context.Context
	db     *pgtest.DB
	svc    *Service
	intake *intake.Service
	river  *river.Client[pgx.Tx]
	git    *gitserver.Server
	token  string
	repos  int
}

type opt func(*Options)

func setup(t *testing.T, opts ...opt) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kubebox")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, db: pgtest.New(t), token: "tok-" + strings.ReplaceAll(t.Name(), "/", "-")}
	e.git = gitserver.Start(t, gitserver.Options{Username: "kiln", Token: e.token})
	e.start(opts...)
	return e
}

// start builds a Service and a River client working its queue (again after
// stop: another dispatcher taking over).
func (e *env) start(opts ...opt) {
	t := e.t
	ins, err := queue.NewClient(e.db.Pool, queue.Options{Schema: e.db.Schema})
	require.NoError(t, err)
	lc, err := lifecycle.New(lifecycle.Options{Pool: e.db.Pool, River: ins})
	require.NoError(t, err)
	o := Options{Pool: e.db.Pool, River: ins, Client: cluster.Client, Lifecycle: lc, BuildsNamespace: buildsNS,
		AddonURLs:        map[string]string{"postgres": pg.AdminURL, "redis": rd.AdminURL},
		StepBackoff:      func(int) time.Duration { return 20 * time.Millisecond },
		Env:              map[string]string{"PATH": "/usr/local/bin:/usr/bin:/bin"},
		WorkspaceTimeout: 90 * time.Second, Slice: 5 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	e.svc, err = New(o)
	require.NoError(t, err)
	workers := river.NewWorkers()
	e.svc.AddWorkers(workers)
	e.river, err = queue.NewClient(e.db.Pool, queue.Options{Schema: e.db.Schema, Workers: workers,
		Queues: map[string]river.QueueConfig{Queue: {MaxWorkers: 4}}})
	require.NoError(t, err)
	require.NoError(t, e.river.Start(context.WithoutCancel(e.ctx)))
	c := e.river
	t.Cleanup(func() { _ = c.StopAndCancel(context.Background()) })
	e.intake, err = intake.New(intake.Options{Store: store.New(e.db.Pool), Lifecycle: lc, Workspaces: e.svc})
	require.NoError(t, err)
}

func (e *env) stop() { require.NoError(e.t, e.river.StopAndCancel(e.ctx)) }

var admin = &auth.Principal{Admin: true, Name: "test-admin"}

// create makes a managed project named name with both add-ons on a private
// repository of the gitserver (token: the right one unless given).
func (e *env) create(name string, token ...string) *schema.Project {
	e.t.Helper()
	e.repos++
	url := e.git.NewRepo(e.t, fmt.Sprintf("%s-%d", name, e.repos), "main", map[string]string{"README.md": "# " + name + "\n"})
	tok := e.token
	if len(token) > 0 {
		tok = token[0]
	}
	p, err := e.intake.CreateProject(e.ctx, admin, schema.ProjectInput{Name: name,
		Repository: &schema.RepositoryInput{URL: url, Branch: "main", Credentials: &schema.Credentials{Username: "kiln", Token: tok}},
		Workspace:  &schema.WorkspaceInput{SecretEnv: map[string]string{"API_KEY": "sek-" + name}, Env: map[string]string{"GREETING": "hi"}},
		Addons:     []schema.AddonInput{{Type: "postgres"}, {Type: "redis"}}})
	require.NoError(e.t, err)
	require.Equal(e.t, schema.ProjectProvisioning, p.Status)
	return p
}

// wait returns the project once its status is one of want.
func (e *env) wait(id string, want ...schema.ProjectStatus) *store.ProjectRow {
	e.t.Helper()
	var r *store.ProjectRow
	kbtest.WaitFor(e.t, 3*time.Minute, "project "+id+" to be "+fmt.Sprint(want), func(ctx context.Context) (bool, error) {
		var err error
		r, err = store.GetProjectRow(ctx, e.db.Pool, id)
		if err != nil {
			return false, err
		}
		for _, w := range want {
			if r.Status == w {
				return true, nil
			}
		}
		return false, nil
	})
	return r
}

func (e *env) spec(r *store.ProjectRow) workspace.Spec { return e.svc.spec(r, nil) }

// leftovers lists everything of the project that still exists anywhere:
// labelled Kubernetes objects, the credentials Secret, the database and
// role, the Redis ACL user.
func (e *env) leftovers(r *store.ProjectRow) []string {
	e.t.Helper()
	out, err := workspace.NewManager(cluster.Client, nil).Leftovers(e.ctx, e.spec(r))
	require.NoError(e.t, err)
	_, err = cluster.Client.CoreV1().Secrets(buildsNS).Get(e.ctx, jobtemplates.ProjectSecretName(r.ID), metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		out = append(out, "Secret/"+buildsNS+"/"+jobtemplates.ProjectSecretName(r.ID))
	}
	pool, err := pgxpool.New(e.ctx, pg.AdminURL)
	require.NoError(e.t, err)
	defer pool.Close()
	name := "kiln_" + strings.ReplaceAll(r.Name, "-", "_")
	var n int
	require.NoError(e.t, pool.QueryRow(e.ctx, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1) +
		(SELECT count(*) FROM pg_database WHERE datname = $1)`, name).Scan(&n))
	if n > 0 {
		out = append(out, fmt.Sprintf("postgres role or database %s (%d)", name, n))
	}
	acl, err := exec.CommandContext(e.ctx, "redis-cli", "-u", rd.AdminURL, "--no-auth-warning", "ACL", "USERS").Output()
	require.NoError(e.t, err)
	for _, u := range strings.Fields(string(acl)) {
		if u == "kiln-"+r.Name {
			out = append(out, "redis ACL user "+u)
		}
	}
	return out
}

func (e *env) podExec(r *store.ProjectRow, script string) (string, error) {
	cmd := exec.CommandContext(e.ctx, "kubectl", "--kubeconfig", cluster.Kubeconfig, "-n", r.Namespace, "exec",
		workspace.PodName(e.spec(r)), "-c", workspace.ContainerName, "--", "sh", "-c", script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestProvisionReadyWithAddonsOnAPrivateRepository(t *testing.T) {
	e := setup(t)
	p := e.create("alpha")
	r := e.wait(p.ID, schema.ProjectReady, schema.ProjectFailed)
	require.Equal(t, schema.ProjectReady, r.Status, "failed at %s: %s", r.Provisioning.FailedStep, r.Provisioning.Error)
	for _, st := range r.Provisioning.Steps {
		assert.Equal(t, schema.StepDone, st.Status, st.Name)
		assert.Equal(t, 1, st.Attempts, st.Name)
		assert.NotNil(t, st.FinishedAt, st.Name)
	}
	assert.Equal(t, []schema.Addon{{Type: "postgres", Env: []string{"DATABASE_URL"}}, {Type: "redis", Env: []string{"REDIS_URL"}}}, r.Addons)
	assert.Equal(t, "kiln-alpha", r.Namespace)
	assert.Equal(t, "alpha-0", r.PodName)
	assert.Equal(t, []string{"API_KEY"}, r.Workspace.SecretEnvKeys)

	head := e.git.Head(t, "alpha-1", "main")
	out, err := e.podExec(r, `cd `+workspace.Workdir+` && git rev-parse HEAD && cat .git/config && echo "key=$API_KEY greet=$GREETING" &&
		psql "$DATABASE_URL" -qAtc 'CREATE TABLE t (x int); INSERT INTO t VALUES (7); SELECT x FROM t' &&
		redis-cli -u "$REDIS_URL" --no-auth-warning SET alpha:k v && redis-cli -u "$REDIS_URL" --no-auth-warning SET other:k v`)
	require.NoError(t, err, out)
	assert.Contains(t, out, head)
	assert.Contains(t, out, "key=sek-alpha greet=hi")
	assert.Contains(t, out, "\n7\n")
	assert.Contains(t, out, "OK")
	assert.Contains(t, out, "NOPERM", "the Redis user may not write another prefix")
	assert.NotContains(t, out, e.token, "the clone's config and the environment hold no token")

	// Nothing the API or the database shows holds a secret.
	for _, table := range []string{"projects", "project_steps"} {
		var dump string
		require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT coalesce(string_agg(t::text, ' '), '') FROM `+table+` t`).Scan(&dump))
		assert.NotContains(t, dump, e.token, table)
		assert.NotContains(t, dump, "sek-alpha", table)
	}
}

// A fault at each step in turn, after its attempts, rolls back every step
// that ran and leaves nothing behind.
func TestFaultAtEachStepLeavesNothing(t *testing.T) {
	for i, step := range Steps([]string{"postgres", "redis"}) {
		t.Run(strings.ReplaceAll(step, ":", "-"), func(t *testing.T) {
			var mu sync.Mutex
			tries := 0
			e := setup(t, func(o *Options) {
				o.testHookBeforeStep = func(_ context.Context, s string) error {
					if s != step {
						return nil
					}
					mu.Lock()
					defer mu.Unlock()
					tries++
					return errors.New("injected fault")
				}
			})
			p := e.create(fmt.Sprintf("fault-%d", i))
			r := e.wait(p.ID, schema.ProjectFailed, schema.ProjectReady)
			require.Equal(t, schema.ProjectFailed, r.Status)
			assert.Equal(t, step, r.Provisioning.FailedStep)
			assert.Contains(t, r.Provisioning.Error, "injected fault")
			mu.Lock()
			assert.Equal(t, 3, tries, "the step is tried StepAttempts times")
			mu.Unlock()
			for j, st := range r.Provisioning.Steps {
				switch {
				case j < i:
					assert.Equal(t, schema.StepRolledBack, st.Status, st.Name)
				case j == i:
					assert.Equal(t, schema.StepFailed, st.Status, st.Name)
					assert.Equal(t, 3, st.Attempts)
				default:
					assert.Equal(t, schema.StepPending, st.Status, st.Name)
				}
			}
			assert.Empty(t, e.leftovers(r))
		})
	}
}

func TestWrongTokenFailsAtTheCloneNamingGit(t *testing.T) {
	e := setup(t)
	p := e.create("badtoken", "not-the-token-123")
	r := e.wait(p.ID, schema.ProjectFailed, schema.ProjectReady)
	require.Equal(t, schema.ProjectFailed, r.Status)
	assert.Equal(t, StepWorkspace, r.Provisioning.FailedStep)
	assert.Contains(t, r.Provisioning.Error, "Authentication failed")
	assert.NotContains(t, r.Provisioning.Error, "not-the-token-123")
	assert.Equal(t, 1, r.Provisioning.Steps[len(r.Provisioning.Steps)-1].Attempts, "a refused clone is not retried")
	assert.Empty(t, e.leftovers(r))
}

// A dispatcher that stops mid-provisioning (its River client cancelled
// while a step runs) leaves the project to the next, which ends it ready.
func TestResumesAfterTheDispatcherStops(t *testing.T) {
	block := make(chan struct{})
	var once sync.Once
	e := setup(t, func(o *Options) {
		o.testHookBeforeStep = func(ctx context.Context, s string) error {
			if s == "addon:redis" {
				first := false
				once.Do(func() { close(block); first = true })
				if first {
					<-ctx.Done() // until the client stops and cancels its jobs
					return ctx.Err()
				}
			}
			return nil
		}
	})
	p := e.create("resume")
	<-block
	e.stop()
	r, err := store.GetProjectRow(e.ctx, e.db.Pool, p.ID)
	require.NoError(t, err)
	require.Equal(t, schema.ProjectProvisioning, r.Status)
	e.start()
	r = e.wait(p.ID, schema.ProjectReady, schema.ProjectFailed)
	require.Equal(t, schema.ProjectReady, r.Status, r.Provisioning.Error)
	for _, st := range r.Provisioning.Steps[:3] {
		assert.Equal(t, 1, st.Attempts, "%s ran once: done steps are not redone", st.Name)
	}
}

func TestRetireRemovesEverything(t *testing.T) {
	e := setup(t)
	p := e.create("gone")
	r := e.wait(p.ID, schema.ProjectReady, schema.ProjectFailed)
	require.Equal(t, schema.ProjectReady, r.Status, r.Provisioning.Error)
	require.NotEmpty(t, e.leftovers(r))
	del, err := e.intake.RetireProject(e.ctx, admin, p.ID)
	require.NoError(t, err)
	assert.Equal(t, schema.ProjectDeleting, del.Status)
	kbtest.WaitFor(t, 2*time.Minute, "project gone", func(ctx context.Context) (bool, error) {
		_, err := store.GetProjectRow(ctx, e.db.Pool, p.ID)
		return errors.Is(err, store.ErrNotFound), nil
	})
	assert.Empty(t, e.leftovers(r))
	// Its name is free again.
	again := e.create("gone")
	assert.NotEqual(t, p.ID, again.ID)
}

func TestRefusesAnUnlabelledNamespace(t *testing.T) {
	e := setup(t)
	_, err := cluster.Client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kiln-squatted"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	p := e.create("squatted")
	r := e.wait(p.ID, schema.ProjectFailed, schema.ProjectReady)
	require.Equal(t, schema.ProjectFailed, r.Status)
	assert.Equal(t, StepNamespace, r.Provisioning.FailedStep)
	_, err = cluster.Client.CoreV1().Namespaces().Get(e.ctx, "kiln-squatted", metav1.GetOptions{})
	assert.NoError(t, err, "a namespace Kiln did not make is never deleted")
}

// Two replicas never work one project at once: the second's job finds the
// project locked (and snoozes) until the first lets go, also when the first
// dies with its connection.
func TestOneReplicaAtATime(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	const id = "01a23300-0000-7000-8000-000000000001"
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- withProjectLock(ctx, db.Pool, id, func() error {
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	err := withProjectLock(ctx, db.Pool, id, func() error { return errors.New("must not run") })
	assert.ErrorIs(t, err, errLocked)
	assert.NoError(t, withProjectLock(ctx, db.Pool, "01a23300-0000-7000-8000-000000000002", func() error { return nil }),
		"another project is not held up")
	close(release)
	require.NoError(t, <-done)
	assert.NoError(t, withProjectLock(ctx, db.Pool, id, func() error { return nil }), "free again once the first is done")

	// A dispatcher killed while holding it: its connection goes, and the lock with it.
	other := pgtest.Pool(t, db.Schema, 2)
	conn, err := other.Acquire(ctx)
	require.NoError(t, err)
	h := fnvKey(id)
	var ok bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, int32(lockSpace), h).Scan(&ok))
	require.True(t, ok)
	assert.ErrorIs(t, withProjectLock(ctx, db.Pool, id, func() error { return nil }), errLocked)
	require.NoError(t, conn.Conn().Close(ctx))
	conn.Release()
	// The server ends the dead session (and frees its locks) a moment after the connection closes.
	assert.Eventually(t, func() bool { return withProjectLock(ctx, db.Pool, id, func() error { return nil }) == nil },
		10*time.Second, 20*time.Millisecond)
}
