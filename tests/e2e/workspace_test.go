package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/gitserver"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/messagesapi"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
	"github.com/kilnbuild/kiln/tests/servers"
)

// WorkspaceImage is the dispatcher's default workspace image
// (workspace.DefaultImage); kubebox maps it to /bin/sh.
const WorkspaceImage = "kilnbuild/kiln-workspace:latest"

// labelProject labels every object of a managed project with its id
// (workspace.LabelProject).
const labelProject = "kiln.dev/project"

var tmpOnce sync.Once

// wsEnv is an env whose dispatchers provision managed projects: add-on
// servers, a token-checking git server with one repository.
type wsEnv struct {
	*env
	pg     *servers.Postgres
	rd     *servers.Redis
	git    *gitserver.Server
	token  string
	repo   string // repository name on git
	url    string // its clone URL, without credentials
	branch string
}

// newWorkspaceEnv is newEnv with add-on servers (when addons) and a private
// repository; its dispatchers get the add-ons' admin URLs.
func newWorkspaceEnv(t *testing.T, addons bool, extraEnv ...string) *wsEnv {
	t.Helper()
	e := &wsEnv{env: newEnv(t, extraEnv...), token: "tok-" + randHex(12), repo: "app", branch: "main"}
	e.git = gitserver.Start(t, gitserver.Options{Username: "kiln-bot", Token: e.token})
	e.url = e.git.NewRepo(t, e.repo, e.branch, map[string]string{"README.md": "hello\n", "index.html": "<h1>Hello</h1>\n"})
	if addons {
		// Postgres runs as the postgres user in a directory under TMPDIR,
		// which TestMain made 0700.
		tmpOnce.Do(func() { _ = os.Chmod(os.TempDir(), 0o755) })
		e.pg = servers.NewPostgres(t)
		e.rd = servers.NewRedis(t)
		e.extraEnv = append(e.extraEnv, "KILN_ADDON_POSTGRES_URL="+e.pg.AdminURL, "KILN_ADDON_REDIS_URL="+e.rd.AdminURL)
	}
	return e
}

// managedInput is a managed project on e's repository with token (and the
// add-ons asked for, and one secret_env variable).
func (e *wsEnv) managedInput(name, token string, addons ...string) schema.ProjectInput {
	in := schema.ProjectInput{Name: name, MaxConcurrent: 1,
		Repository: &schema.RepositoryInput{URL: e.url, Branch: e.branch,
			Credentials: &schema.Credentials{Username: "kiln-bot", Token: token}},
		Workspace: &schema.WorkspaceInput{Env: map[string]string{"APP_MODE": "test"},
			SecretEnv: map[string]string{"API_KEY": "sk-" + name + "-" + randHex(10)}}}
	for _, a := range addons {
		in.Addons = append(in.Addons, schema.AddonInput{Type: a})
	}
	return in
}

// projectName is a fresh managed project name: its namespace (kiln-<name>)
// is cluster-wide, and tests run in parallel.
func projectName(prefix string) string { return prefix + "-" + randHex(3) }

// call makes an admin REST request to d and returns the status and body.
func (e *env) call(d *dispatcher, method, path string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(e.t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err, "%s %s", method, path)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp.StatusCode, out
}

// postManaged creates a managed project and cleans up its namespace (the
// cluster is shared) at the end. It wants 202.
func (e *wsEnv) postManaged(d *dispatcher, in schema.ProjectInput) (schema.Project, []byte) {
	e.t.Helper()
	e.cleanupNamespace("kiln-" + in.Name)
	code, body := e.call(d, http.MethodPost, "/projects", in)
	require.Equal(e.t, http.StatusAccepted, code, "POST /projects: %s", body)
	var p schema.Project
	require.NoError(e.t, json.Unmarshal(body, &p))
	assert.Equal(e.t, schema.ProjectProvisioning, p.Status)
	assert.True(e.t, p.Managed)
	return p, body
}

func (e *env) cleanupNamespace(ns string) {
	e.t.Cleanup(func() {
		_ = cluster.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
}

// getProject returns GET /projects/{id}'s status, the project and the raw body.
func (e *env) getProject(d *dispatcher, id string) (int, schema.Project, []byte) {
	e.t.Helper()
	code, body := e.call(d, http.MethodGet, "/projects/"+id, nil)
	var p schema.Project
	if code == http.StatusOK {
		require.NoError(e.t, json.Unmarshal(body, &p), "%s", body)
	}
	return code, p, body
}

// waitProject polls GET /projects/{id} until the project is in one of want,
// failing at once when it settles (ready or failed) elsewhere. It returns
// the project and every raw body seen.
func (e *env) waitProject(d *dispatcher, id string, timeout time.Duration, want ...schema.ProjectStatus) (schema.Project, [][]byte) {
	e.t.Helper()
	var last schema.Project
	var bodies [][]byte
	kbtest.WaitFor(e.t, timeout, fmt.Sprintf("project %s to be %v", id, want), func(context.Context) (bool, error) {
		code, p, body := e.getProject(d, id)
		if code != http.StatusOK {
			return false, fmt.Errorf("GET /projects/%s: %d %s", id, code, body)
		}
		bodies = append(bodies, body)
		last = p
		if slices.Contains(want, p.Status) {
			return true, nil
		}
		if p.Status == schema.ProjectReady || p.Status == schema.ProjectFailed {
			e.t.Fatalf("project %s is %s, want %v: %s", id, p.Status, want, body)
		}
		return false, fmt.Errorf("it is %s", p.Status)
	})
	return last, bodies
}

// waitGone polls GET /projects/{id} until it answers 404.
func (e *env) waitGone(d *dispatcher, id string, timeout time.Duration) {
	e.t.Helper()
	kbtest.WaitFor(e.t, timeout, "project "+id+" to answer 404", func(context.Context) (bool, error) {
		code, p, body := e.getProject(d, id)
		if code == http.StatusNotFound {
			return true, nil
		}
		if code == http.StatusOK && p.Status != schema.ProjectDeleting {
			e.t.Fatalf("a deleted project is %s: %s", p.Status, body)
		}
		return false, fmt.Errorf("GET: %d %s", code, body)
	})
}

// podExec runs script with sh in the workspace container (as the admin),
// returning its combined output.
func podExec(t *testing.T, ns, pod, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", cluster.Kubeconfig, "exec", "-n", ns, pod,
		"-c", "workspace", "--", "sh", "-c", script).CombinedOutput()
	return string(out), err
}

func mustExec(t *testing.T, ns, pod, script string) string {
	t.Helper()
	out, err := podExec(t, ns, pod, script)
	require.NoError(t, err, "exec %q: %s", script, out)
	return strings.TrimSpace(out)
}

// leftovers lists what is left of a managed project: objects labelled with
// its id, its add-on role, database and ACL user, its credentials Secret.
func (e *wsEnv) leftovers(id, name string) []string {
	e.t.Helper()
	ctx := context.Background()
	var left []string
	sel := metav1.ListOptions{LabelSelector: labelProject + "=" + jobtemplates.LabelValue(id)}
	k := cluster.Client
	nss, err := k.CoreV1().Namespaces().List(ctx, sel)
	require.NoError(e.t, err)
	for _, o := range nss.Items {
		left = append(left, "namespace "+o.Name+" (phase "+string(o.Status.Phase)+")")
	}
	secs, err := k.CoreV1().Secrets("").List(ctx, sel)
	require.NoError(e.t, err)
	for _, o := range secs.Items {
		left = append(left, "secret "+o.Namespace+"/"+o.Name)
	}
	sas, err := k.CoreV1().ServiceAccounts("").List(ctx, sel)
	require.NoError(e.t, err)
	for _, o := range sas.Items {
		left = append(left, "serviceaccount "+o.Namespace+"/"+o.Name)
	}
	sts, err := k.AppsV1().StatefulSets("").List(ctx, sel)
	require.NoError(e.t, err)
	for _, o := range sts.Items {
		left = append(left, "statefulset "+o.Namespace+"/"+o.Name)
	}
	rbs, err := k.RbacV1().RoleBindings("").List(ctx, sel)
	require.NoError(e.t, err)
	for _, o := range rbs.Items {
		left = append(left, "rolebinding "+o.Namespace+"/"+o.Name)
	}
	pods, err := k.CoreV1().Pods("").List(ctx, sel)
	require.NoError(e.t, err)
	for _, o := range pods.Items {
		left = append(left, "pod "+o.Namespace+"/"+o.Name)
	}
	if _, err := k.CoreV1().Secrets(e.ns).Get(ctx, jobtemplates.ProjectSecretName(id), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("credentials secret %s/%s (%v)", e.ns, jobtemplates.ProjectSecretName(id), err))
	}
	if e.pg != nil {
		pgName := "kiln_" + strings.ReplaceAll(name, "-", "_")
		conn, err := pgx.Connect(ctx, e.pg.AdminURL)
		require.NoError(e.t, err)
		defer conn.Close(ctx)
		var roles, dbs int
		require.NoError(e.t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, pgName).Scan(&roles))
		require.NoError(e.t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, pgName).Scan(&dbs))
		if roles > 0 {
			left = append(left, "postgres role "+pgName)
		}
		if dbs > 0 {
			left = append(left, "postgres database "+pgName)
		}
	}
	if e.rd != nil {
		if users := redisACLUsers(e.t, e.rd); slices.Contains(users, "kiln-"+name) {
			left = append(left, "redis user kiln-"+name)
		}
	}
	return left
}

// redisACLUsers lists the Redis server's ACL users (the password goes by
// the environment, not argv).
func redisACLUsers(t *testing.T, rd *servers.Redis) []string {
	t.Helper()
	host, port, _ := strings.Cut(rd.Addr, ":")
	cmd := exec.Command("redis-cli", "-h", host, "-p", port, "--no-auth-warning", "ACL", "USERS")
	cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+rd.Password)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return strings.Fields(string(out))
}

// dbText is every row of every table of e's schema, as JSON text.
func (e *env) dbText() string {
	e.t.Helper()
	ctx := context.Background()
	rows, err := e.pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'`, e.schema)
	require.NoError(e.t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(e.t, err)
	for _, want := range []string{"projects", "project_steps", "build_events"} {
		require.Contains(e.t, tables, want)
	}
	var all strings.Builder
	for _, tb := range tables {
		rows, err := e.pool.Query(ctx, `SELECT row_to_json(t)::text FROM `+pgx.Identifier{tb}.Sanitize()+` t`)
		require.NoError(e.t, err)
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(e.t, err)
		for _, s := range texts {
			all.WriteString(tb + ": " + s + "\n")
		}
	}
	return all.String()
}

// assertNoSecrets checks that none of secrets is in any of the texts.
func assertNoSecrets(t *testing.T, where string, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		require.NotEmpty(t, s)
		assert.NotContains(t, text, s, "a secret is in %s", where)
	}
}

func stepsDone(t *testing.T, p schema.Project) {
	t.Helper()
	require.NotNil(t, p.Provisioning)
	require.NotEmpty(t, p.Provisioning.Steps)
	for _, st := range p.Provisioning.Steps {
		assert.Equal(t, schema.StepDone, st.Status, "step %s", st.Name)
		assert.GreaterOrEqual(t, st.Attempts, 1, "step %s", st.Name)
		assert.Empty(t, st.Error, "step %s", st.Name)
	}
	assert.Empty(t, p.Provisioning.FailedStep)
	assert.NotNil(t, p.Provisioning.ReadyAt)
}

// provisionTimes collects POST → ready times of projects with both add-ons.
var provisionTimes struct {
	sync.Mutex
	d []time.Duration
}

func recordProvision(t *testing.T, d time.Duration) {
	provisionTimes.Lock()
	provisionTimes.d = append(provisionTimes.d, d)
	provisionTimes.Unlock()
	t.Logf("POST /projects to ready: %s", d.Round(time.Millisecond))
}

// A managed project with both add-ons on a private repository becomes
// ready; the API shows no secret; its pod holds the clone at the branch
// head without the token, working add-on credentials confined to the
// project, secret_env, and no token anywhere in its environment or spec.
func TestManagedProjectReady(t *testing.T) {
	e := newWorkspaceEnv(t, true)
	d := e.start()
	a, b := projectName("wsa"), projectName("wsb")
	inA, inB := e.managedInput(a, e.token, "postgres", "redis"), e.managedInput(b, e.token, "postgres", "redis")
	t0 := time.Now()
	pa, created := e.postManaged(d, inA)
	pb, _ := e.postManaged(d, inB)
	secretEnv := inA.Workspace.SecretEnv["API_KEY"]
	assert.Equal(t, []string{"API_KEY"}, pa.Workspace.SecretEnvKeys)

	p, bodies := e.waitProject(d, pa.ID, 3*time.Minute, schema.ProjectReady)
	recordProvision(t, time.Since(t0))
	e.waitProject(d, pb.ID, 3*time.Minute, schema.ProjectReady)
	stepsDone(t, p)
	var names []string
	for _, st := range p.Provisioning.Steps {
		names = append(names, st.Name)
	}
	assert.Equal(t, []string{"namespace", "service_account", "secret", "addon:postgres", "addon:redis", "runner_access", "workspace"}, names)
	assert.Equal(t, "kiln-"+a, p.Namespace)
	assert.Equal(t, a+"-0", p.PodName)
	assert.Equal(t, "workspace", p.Container)
	assert.Equal(t, "/workspace/repo", p.Workdir)
	require.Len(t, p.Addons, 2)
	envs := map[string][]string{}
	for _, ad := range p.Addons {
		envs[ad.Type] = ad.Env
	}
	assert.Equal(t, map[string][]string{"postgres": {"DATABASE_URL"}, "redis": {"REDIS_URL"}}, envs)
	require.NotNil(t, p.Repository)
	assert.Equal(t, "https", p.Repository.Credentials)

	ns, pod := p.Namespace, p.PodName
	// The clone is at the branch head and its config holds no token.
	assert.Equal(t, e.git.Head(t, e.repo, e.branch), mustExec(t, ns, pod, "git -C /workspace/repo rev-parse HEAD"))
	gitConfig := mustExec(t, ns, pod, "cat /workspace/repo/.git/config")
	assert.Contains(t, gitConfig, e.url, "the remote is the credential-free URL")
	assert.NotContains(t, gitConfig, e.token)
	// secret_env is there; the token is not.
	assert.Equal(t, secretEnv, mustExec(t, ns, pod, "printenv API_KEY"))
	assert.Equal(t, "test", mustExec(t, ns, pod, "printenv APP_MODE"))
	podEnv := mustExec(t, ns, pod, "env")
	assert.NotContains(t, podEnv, e.token, "the git token is in the workspace's environment")
	podObj, err := cluster.Client.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
	require.NoError(t, err)
	podJSON, _ := json.Marshal(podObj)
	assert.NotContains(t, string(podJSON), e.token, "the git token is in the pod spec")
	assert.NotContains(t, string(podJSON), secretEnv, "a secret_env value is in the pod spec")
	for _, c := range podObj.Spec.Containers {
		for _, m := range c.VolumeMounts {
			assert.NotEqual(t, "git-credentials", m.Name, "the main container mounts the git credentials")
		}
	}

	// Postgres: the project's role makes tables in its database, and cannot
	// connect to the other project's.
	dbURL := mustExec(t, ns, pod, "printenv DATABASE_URL")
	redisURL := mustExec(t, ns, pod, "printenv REDIS_URL")
	out := mustExec(t, ns, pod, `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAt -c "CREATE TABLE widgets (id int); INSERT INTO widgets VALUES (7); SELECT id FROM widgets"`)
	assert.Equal(t, "7", out)
	aDB, bDB := "kiln_"+strings.ReplaceAll(a, "-", "_"), "kiln_"+strings.ReplaceAll(b, "-", "_")
	out, err = podExec(t, ns, pod, fmt.Sprintf(`u=$(printf %%s "$DATABASE_URL" | sed -E 's#/%s([?]|$)#/%s\1#'); case "$u" in *%s*) ;; *) echo "no swap"; exit 9;; esac; psql "$u" -qAt -c "SELECT 1"`, aDB, bDB, bDB))
	require.Error(t, err, "project %s's role connected to project %s's database: %s", a, b, out)
	assert.NotContains(t, out, "no swap")
	assert.Regexp(t, `permission denied|not permitted|CONNECT privilege`, out)
	// Redis: keys under <name>: only.
	out = mustExec(t, ns, pod, fmt.Sprintf(`redis-cli --no-auth-warning -u "$REDIS_URL" SET %s:k v`, a))
	assert.Equal(t, "OK", out)
	out, _ = podExec(t, ns, pod, fmt.Sprintf(`redis-cli --no-auth-warning -u "$REDIS_URL" SET %s:k v`, b))
	assert.Contains(t, out, "NOPERM")
	out, _ = podExec(t, ns, pod, `redis-cli --no-auth-warning -u "$REDIS_URL" SET other:k v`)
	assert.Contains(t, out, "NOPERM")

	// No secret in any answer, the log or the database.
	pgPass := urlPassword(t, dbURL)
	rdPass := urlPassword(t, redisURL)
	secrets := []string{e.token, secretEnv, pgPass, rdPass}
	all := string(created) + "\n" + string(bytes.Join(bodies, []byte("\n")))
	_, list := e.call(d, http.MethodGet, "/projects", nil)
	all += "\n" + string(list)
	assertNoSecrets(t, "the API's answers", all, secrets...)
	assertNoSecrets(t, "the dispatcher log", readFile(t, d.log), secrets...)
	assertNoSecrets(t, "the database", e.dbText(), secrets...)
}

// urlPassword is the password of a postgres:// or redis:// URL.
func urlPassword(t *testing.T, raw string) string {
	t.Helper()
	_, rest, ok := strings.Cut(raw, "://")
	require.True(t, ok, "not a URL")
	userinfo, _, ok := strings.Cut(rest, "@")
	require.True(t, ok, "no userinfo in the add-on URL")
	_, pass, ok := strings.Cut(userinfo, ":")
	require.True(t, ok && len(pass) >= 8, "no password in the add-on URL")
	return pass
}

// A wrong token: the clone is refused, the project ends failed at step
// workspace with git's reason (not the token), and everything is rolled back.
func TestManagedProvisionWrongToken(t *testing.T) {
	e := newWorkspaceEnv(t, true)
	d := e.start()
	name := projectName("wsbad")
	wrong := "wrong-" + randHex(12)
	p0, _ := e.postManaged(d, e.managedInput(name, wrong, "postgres", "redis"))
	p, bodies := e.waitProject(d, p0.ID, 3*time.Minute, schema.ProjectFailed)
	require.NotNil(t, p.Provisioning)
	assert.Equal(t, "workspace", p.Provisioning.FailedStep)
	assert.Regexp(t, `(?i)authentication failed|could not read Username|401`, p.Provisioning.Error)
	assertNoSecrets(t, "the provisioning error", p.Provisioning.Error, wrong, e.token)
	statuses := map[string]schema.StepStatus{}
	for _, st := range p.Provisioning.Steps {
		statuses[st.Name] = st.Status
	}
	assert.Equal(t, schema.StepFailed, statuses["workspace"])
	for _, n := range []string{"namespace", "service_account", "secret", "addon:postgres", "addon:redis", "runner_access"} {
		assert.Equal(t, schema.StepRolledBack, statuses[n], "step %s", n)
	}
	assert.Empty(t, e.leftovers(p.ID, name), "left after the rollback")
	assertNoSecrets(t, "the API's answers", string(bytes.Join(bodies, []byte("\n"))), wrong)
	assertNoSecrets(t, "the dispatcher log", readFile(t, d.log), wrong)
	assertNoSecrets(t, "the database", e.dbText(), wrong)
}

// kill -9 mid-provisioning: a new dispatcher finishes the project; it ends
// ready with every step done, once (one workspace, one add-on role).
func TestManagedProvisionSurvivesKill9(t *testing.T) {
	e := newWorkspaceEnv(t, true)
	d := e.start()
	name := projectName("wskill")
	p0, _ := e.postManaged(d, e.managedInput(name, e.token, "postgres", "redis"))
	var seen schema.Project
	deadline := time.Now().Add(2 * time.Minute)
	for {
		require.True(t, time.Now().Before(deadline), "provisioning never started")
		code, p, body := e.getProject(d, p0.ID)
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.Equal(t, schema.ProjectProvisioning, p.Status, "the project settled before the kill: %s", body)
		started := false
		for _, st := range p.Provisioning.Steps {
			started = started || st.Status == schema.StepRunning || st.Status == schema.StepDone
		}
		if started {
			seen = p
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.kill9()
	t.Logf("killed with steps %s", stepSummary(seen))
	d2 := e.start()
	p, _ := e.waitProject(d2, p0.ID, 4*time.Minute, schema.ProjectReady, schema.ProjectFailed)
	require.Equal(t, schema.ProjectReady, p.Status, "steps %s, error %q", stepSummary(p), p.Provisioning.Error)
	stepsDone(t, p)
	t.Logf("after the restart: %s", stepSummary(p))
	pods, err := cluster.Client.CoreV1().Pods(p.Namespace).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, pods.Items, 1, "one workspace pod")
	assert.Equal(t, e.git.Head(t, e.repo, e.branch), mustExec(t, p.Namespace, p.PodName, "git -C /workspace/repo rev-parse HEAD"))
	mustExec(t, p.Namespace, p.PodName, `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAt -c "SELECT 1"`)
}

func stepSummary(p schema.Project) string {
	if p.Provisioning == nil {
		return "(none)"
	}
	var s []string
	for _, st := range p.Provisioning.Steps {
		s = append(s, fmt.Sprintf("%s=%s/%d", st.Name, st.Status, st.Attempts))
	}
	return strings.Join(s, " ")
}

// DELETE of a ready managed project cancels its builds, removes every
// resource and then answers 404; its builds stay readable. A
// bring-your-own-pod project next to it runs a build, and its DELETE leaves
// its pod alone.
func TestManagedProjectDelete(t *testing.T) {
	e := newWorkspaceEnv(t, true)
	d := e.start()
	name := projectName("wsdel")
	t0 := time.Now()
	p0, _ := e.postManaged(d, e.managedInput(name, e.token, "postgres", "redis"))

	// The bring-your-own-pod project, meanwhile.
	ctx := context.Background()
	byoPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "byo-" + randHex(3), Namespace: e.ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: harness.ImageProject, Command: []string{"sleep", "3600"}}}}}
	_, err := cluster.Client.CoreV1().Pods(e.ns).Create(ctx, byoPod, metav1.CreateOptions{})
	require.NoError(t, err)
	byo := e.createProject(d, schema.ProjectInput{Name: "byo", Namespace: e.ns, PodName: byoPod.Name, Container: "main", Workdir: "/", MaxConcurrent: 1})
	assert.Equal(t, schema.ProjectReady, byo.Status)
	assert.False(t, byo.Managed)
	byoBuild := e.submit(d, byo.ID, schema.BuildSpec{Prompt: "succeed"})

	p, _ := e.waitProject(d, p0.ID, 3*time.Minute, schema.ProjectReady)
	recordProvision(t, time.Since(t0))
	b := e.waitStatus(d, byoBuild, 90*time.Second, schema.StatusCompleted, schema.StatusFailed)
	require.Equal(t, schema.StatusCompleted, b.Status, b.Error)

	done := e.submit(d, p.ID, schema.BuildSpec{Prompt: "succeed"})
	require.Equal(t, schema.StatusCompleted, e.waitStatus(d, done, 90*time.Second, schema.StatusCompleted, schema.StatusFailed).Status)
	running := e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep"})
	e.waitStatus(d, running, 90*time.Second, schema.StatusRunning)
	pending := e.submit(d, p.ID, schema.BuildSpec{Prompt: "succeed"}) // max_concurrent 1: it waits
	require.Equal(t, schema.StatusPending, e.get(d, pending).Status)

	t1 := time.Now()
	code, body := e.call(d, http.MethodDelete, "/projects/"+p.ID, nil)
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var del schema.Project
	require.NoError(t, json.Unmarshal(body, &del))
	assert.Equal(t, schema.ProjectDeleting, del.Status)
	e.waitGone(d, p.ID, 3*time.Minute)
	t.Logf("DELETE to 404: %s", time.Since(t1).Round(time.Millisecond))
	assert.Empty(t, e.leftovers(p.ID, name), "left after DELETE")

	for id, want := range map[string]schema.Status{done: schema.StatusCompleted, running: schema.StatusCancelled, pending: schema.StatusCancelled} {
		got := e.waitStatus(d, id, 60*time.Second, want)
		assert.Equal(t, p.ID, got.ProjectID)
	}
	code, _ = e.call(d, http.MethodPost, "/projects/"+p.ID+"/builds", schema.BuildSpec{Prompt: "succeed"})
	assert.Contains(t, []int{http.StatusNotFound, http.StatusConflict}, code, "a build of a deleted project")

	// The bring-your-own-pod project: DELETE, 404, and its pod is untouched.
	code, body = e.call(d, http.MethodDelete, "/projects/"+byo.ID, nil)
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	e.waitGone(d, byo.ID, time.Minute)
	got, err := cluster.Client.CoreV1().Pods(e.ns).Get(ctx, byoPod.Name, metav1.GetOptions{})
	require.NoError(t, err, "the bring-your-own pod is gone")
	assert.Nil(t, got.DeletionTimestamp, "the bring-your-own pod is being deleted")
	assert.Equal(t, schema.StatusCompleted, e.get(d, byoBuild).Status)
}

// Two concurrent POST /projects of one name: one 202, one 409, one project.
func TestManagedProjectConcurrentCreate(t *testing.T) {
	e := newWorkspaceEnv(t, false)
	d1, d2 := e.start(), e.start()
	name := projectName("wsdup")
	e.cleanupNamespace("kiln-" + name)
	in := e.managedInput(name, e.token)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	bodies := make([][]byte, 2)
	for i, d := range []*dispatcher{d1, d2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := json.Marshal(in)
			r, err := http.NewRequest(http.MethodPost, d.url+"/projects", bytes.NewReader(req))
			if err != nil {
				return
			}
			r.Header.Set("Authorization", "Bearer "+e.admin)
			r.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			codes[i] = resp.StatusCode
			bodies[i], _ = io.ReadAll(resp.Body)
		}()
	}
	wg.Wait()
	sorted := slices.Clone(codes)
	sort.Ints(sorted)
	require.Equal(t, []int{http.StatusAccepted, http.StatusConflict}, sorted, "%s | %s", bodies[0], bodies[1])
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM projects WHERE name = $1`, name).Scan(&n))
	assert.Equal(t, 1, n)
	_, list := e.call(d1, http.MethodGet, "/projects", nil)
	assert.Equal(t, 1, strings.Count(string(list), `"name":"`+name+`"`), "%s", list)
	var secrets int
	ss, err := cluster.Client.CoreV1().Secrets(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: jobtemplates.LabelManagedBy + "=kiln"})
	require.NoError(t, err)
	for _, s := range ss.Items {
		if strings.HasPrefix(s.Name, "kiln-project-") {
			secrets++
		}
	}
	assert.Equal(t, 1, secrets, "one credentials Secret (the loser's is removed)")
}

// create-and-build: the build waits while its project provisions and then
// runs; a project that fails to provision fails its build (reason
// provisioning, naming the step) and refuses new builds with 409.
func TestManagedCreateAndBuild(t *testing.T) {
	e := newWorkspaceEnv(t, false)
	d := e.start()

	type accepted struct {
		schema.BuildAccepted
		Project schema.Project `json:"project"`
	}
	createAndBuild := func(in schema.ProjectInput) accepted {
		e.cleanupNamespace("kiln-" + in.Name)
		code, body := e.call(d, http.MethodPost, "/project/create-and-build",
			schema.CreateAndBuild{Project: in, Build: schema.BuildSpec{Prompt: "succeed"}})
		require.Equal(t, http.StatusAccepted, code, "%s", body)
		var acc accepted
		require.NoError(t, json.Unmarshal(body, &acc))
		require.NotEmpty(t, acc.TaskID)
		assert.Equal(t, schema.StatusPending, acc.Status)
		assert.Equal(t, schema.ProjectProvisioning, acc.Project.Status)
		return acc
	}

	good := createAndBuild(e.managedInput(projectName("wscab"), e.token))
	bad := createAndBuild(e.managedInput(projectName("wscabx"), "wrong-"+randHex(8)))
	kbtest.WaitFor(t, 60*time.Second, "the build to wait for its project", func(context.Context) (bool, error) {
		for _, ev := range e.events(d, good.TaskID) {
			if strings.Contains(string(ev.Payload), "project provisioning") {
				return true, nil
			}
		}
		return false, nil
	})
	code, p, _ := e.getProject(d, good.Project.ID)
	require.Equal(t, http.StatusOK, code)
	if p.Status == schema.ProjectProvisioning {
		assert.Equal(t, schema.StatusPending, e.get(d, good.TaskID).Status, "a build runs while its project provisions")
	}
	b := e.waitStatus(d, good.TaskID, 4*time.Minute, schema.StatusCompleted, schema.StatusFailed)
	require.Equal(t, schema.StatusCompleted, b.Status, b.Error)
	e.waitProject(d, good.Project.ID, time.Minute, schema.ProjectReady)

	fb := e.waitStatus(d, bad.TaskID, 4*time.Minute, schema.StatusFailed, schema.StatusCompleted)
	require.Equal(t, schema.StatusFailed, fb.Status)
	assert.Equal(t, schema.ReasonProvisioning, fb.Reason)
	assert.Contains(t, fb.Error, "workspace", "the error names the failed step")
	e.waitProject(d, bad.Project.ID, time.Minute, schema.ProjectFailed)
	code, body := e.call(d, http.MethodPost, "/projects/"+bad.Project.ID+"/builds", schema.BuildSpec{Prompt: "succeed"})
	assert.Equal(t, http.StatusConflict, code, "a build of a failed project: %s", body)
}

// KILN_E2E_MEASURE=N: N managed projects with both add-ons, one after
// another; the p50 and max of POST → ready and DELETE → 404.
func TestManagedProvisionMeasure(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("KILN_E2E_MEASURE"))
	if n <= 0 {
		t.Skip("set KILN_E2E_MEASURE=N to measure N provisionings")
	}
	e := newWorkspaceEnv(t, true)
	d := e.start()
	var ready, gone []time.Duration
	for i := 0; i < n; i++ {
		name := projectName("wsm")
		t0 := time.Now()
		p0, _ := e.postManaged(d, e.managedInput(name, e.token, "postgres", "redis"))
		e.waitProject(d, p0.ID, 3*time.Minute, schema.ProjectReady)
		ready = append(ready, time.Since(t0))
		t1 := time.Now()
		code, body := e.call(d, http.MethodDelete, "/projects/"+p0.ID, nil)
		require.Equal(t, http.StatusAccepted, code, "%s", body)
		// Where DELETE's time goes: each change of the steps, as GET shows them.
		var trace []string
		last := ""
		kbtest.WaitFor(t, 3*time.Minute, "project "+p0.ID+" to answer 404", func(context.Context) (bool, error) {
			code, p, _ := e.getProject(d, p0.ID)
			if code == http.StatusNotFound {
				return true, nil
			}
			if s := stepSummary(p); s != last {
				last = s
				trace = append(trace, fmt.Sprintf("+%s %s", time.Since(t1).Round(10*time.Millisecond), s))
			}
			return false, fmt.Errorf("GET: %d", code)
		})
		gone = append(gone, time.Since(t1))
		if i == 0 {
			t.Logf("DELETE trace:\n%s", strings.Join(trace, "\n"))
		}
		require.Empty(t, e.leftovers(p0.ID, name))
	}
	p50 := func(ds []time.Duration) (time.Duration, time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2], s[len(s)-1]
	}
	r50, rmax := p50(ready)
	g50, gmax := p50(gone)
	t.Logf("%d projects: POST→ready p50 %s max %s; DELETE→404 p50 %s max %s", n,
		r50.Round(time.Millisecond), rmax.Round(time.Millisecond), g50.Round(time.Millisecond), gmax.Round(time.Millisecond))
}

// A build on a managed project with the real jobrunner: the agent (the
// pinned CLI against a stand-in model) edits the clone in the workspace pod,
// and the runner pushes with the project's credentials: the git server's
// branch moves to the build's commit, and the token shows nowhere.
func TestManagedWorkspaceRealRunnerPush(t *testing.T) {
	e := newWorkspaceEnv(t, false, "KILN_RUNNER_IMAGE="+harness.ImageRunner)
	d := e.start()
	model := messagesapi.Start(t)
	in := e.managedInput(projectName("wspush"), e.token)
	in.AuthorName, in.AuthorEmail = "Kiln Bot", "bot@kiln.example"
	in.Workspace.Env["PATH"] = runnerBins.AgentDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	in.Workspace.Env["GIT_CONFIG_NOSYSTEM"] = "1"
	for _, kv := range messagesapi.CLIEnv(model.URL(), "") {
		if k, v, _ := strings.Cut(kv, "="); k != "HOME" {
			in.Workspace.Env[k] = v
		}
	}
	p0, _ := e.postManaged(d, in)
	p, _ := e.waitProject(d, p0.ID, 3*time.Minute, schema.ProjectReady)
	before := e.git.Head(t, e.repo, e.branch)

	model.Enqueue(messagesapi.Script{Name: "write index.html", Turns: []messagesapi.Turn{
		{Tools: []messagesapi.ToolUse{{Name: "Write", Input: map[string]any{
			"file_path": p.Workdir + "/index.html", "content": "<h1>Welcome to Acme</h1>\n"}}}},
		{Text: "index.html now welcomes visitors to Acme."},
	}})
	id := e.submit(d, p.ID, schema.BuildSpec{Prompt: "Welcome visitors to Acme.", AutoCommit: true, AutoPush: true})
	b := e.waitStatus(d, id, 3*time.Minute, schema.StatusCompleted, schema.StatusFailed)
	require.Equal(t, schema.StatusCompleted, b.Status, b.Error)
	require.NotNil(t, b.Result)
	assert.Equal(t, []string{"index.html"}, b.Result.FilesChanged)
	require.Len(t, b.Result.CommitSHA, 40)
	after := e.git.Head(t, e.repo, e.branch)
	assert.NotEqual(t, before, after, "the branch did not move")
	assert.Equal(t, b.Result.CommitSHA, after, "the branch is at the build's commit")
	pushed := false
	for _, r := range e.git.Requests() {
		pushed = pushed || (r.Service == "git-receive-pack" && r.Authenticated && r.Method == http.MethodPost)
	}
	assert.True(t, pushed, "no authenticated push reached the git server")
	assert.NotContains(t, mustExec(t, p.Namespace, p.PodName, "cat /workspace/repo/.git/config"), e.token)
	evs, _ := json.Marshal(e.events(d, id))
	assertNoSecrets(t, "the build's events", string(evs), e.token)
	assertNoSecrets(t, "the dispatcher log", readFile(t, d.log), e.token)
	assertNoSecrets(t, "the database", e.dbText(), e.token)
}
