package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/kilnbuild/kiln/tests/childproc"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kilnbuild/kiln/deploy/base/rbac"
	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

// RunnerImage is the image the default template names; kubebox maps it to the
// stand-in runner (or the real jobrunner, in the runner tests).
const RunnerImage = "kilnbuild/kiln-jobrunner:latest"

var (
	binDir     string // dispatcher, standin-runner
	runnerBins harness.Binaries
	markerDir  string
	cluster    *kbtest.Cluster
	dbURL      = envOr("KILN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable")
	buildOnce  sync.Once
	clusterErr error
)

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func TestMain(m *testing.M) {
	var err error
	binDir, err = os.MkdirTemp(kbtest.HostTempDir(), "kiln-e2e-bin-")
	if err != nil {
		panic(err)
	}
	markerDir = filepath.Join(binDir, "markers")
	for name, pkg := range map[string]string{"dispatcher": "../../dispatcher", "standin-runner": "../standin-runner"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	// Files pods must see stay out of /tmp (build pods mount an emptyDir there).
	tmp, err := os.MkdirTemp(kbtest.HostTempDir(), "kiln-e2e-tmp-")
	if err != nil {
		panic(err)
	}
	os.Setenv("TMPDIR", tmp)
	defer os.RemoveAll(tmp)
	runnerBins, err = harness.BuildBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c, stop, err := kbtest.Up(map[string]string{
		RunnerImage:          filepath.Join(binDir, "standin-runner"),
		harness.ImageRunner:  runnerBins.JobRunner,
		harness.ImageProject: "/bin/sleep",
		WorkspaceImage:       "/bin/sh", // the workspace pod runs explicit commands (sh -c, sleep)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	stop(code == 0)
	if code == 0 {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// env is one isolated Kiln: its own namespace, schema and dispatcher processes.
type env struct {
	t          *testing.T
	ns         string
	schema     string
	pool       *pgxpool.Pool
	kubeconfig string // the dispatcher's, with exactly deploy/base/rbac/dispatcher.yaml's rights
	tmplDir    string
	extraEnv   []string
	procs      []*dispatcher
	admin      string
	service    *httptest.Server // a stable URL in front of the live dispatchers, as a Service is
	mu         sync.Mutex
	next       int
}

type dispatcher struct {
	cmd  *exec.Cmd
	url  string
	api  *client.Client // its REST API as the admin
	done chan struct{}
	log  string
}

func newEnv(t *testing.T, extraEnv ...string) *env {
	t.Helper()
	return newEnvIn(t, "kb-"+randHex(4), extraEnv...)
}

// newEnvIn is newEnv with the builds namespace given.
func newEnvIn(t *testing.T, ns string, extraEnv ...string) *env {
	t.Helper()
	t.Parallel()
	ctx := context.Background()
	e := &env{t: t, ns: ns, schema: "e2e_" + randHex(5), extraEnv: extraEnv}

	_, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().Namespaces().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
	})
	e.applyDispatcherRBAC()
	// Build Jobs run as kiln-runner (deploy/base/rbac/runner.yaml).
	_, err = cluster.Client.CoreV1().ServiceAccounts(e.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kiln-runner"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	e.kubeconfig = e.serviceAccountKubeconfig("kiln-dispatcher")

	admin, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+e.schema)
	require.NoError(t, err)
	admin.Close()
	t.Cleanup(func() {
		if c, err := pgxpool.New(context.Background(), dbURL); err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+e.schema+" CASCADE")
			c.Close()
		}
	})
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = e.schema
	e.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(e.pool.Close)
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpPods()
			e.dumpDB()
		}
	})

	e.service = httptest.NewServer(http.HandlerFunc(e.proxy))
	t.Cleanup(e.service.Close)
	e.tmplDir = t.TempDir()
	e.writeTemplates()
	e.run("migrate")
	e.admin = strings.TrimSpace(e.run("token", "create", "--name", "e2e-admin", "--admin"))
	return e
}

// applyDispatcherRBAC applies deploy/base/rbac/dispatcher.yaml with its
// namespaces pointed at this test's namespace (the dispatcher's and the
// builds namespace are both e.ns). Its cluster-scoped objects are made this
// env's own (names suffixed with e.ns, subjects and the admission policy's
// user and exempt namespace pointed at e.ns) and removed when the test
// ends; the ClusterRole kiln-runner-exec, which the provisioning ClusterRole
// names in its bind rule, is shared by every env and kept.
func (e *env) applyDispatcherRBAC() {
	ctx := context.Background()
	dec := scheme.Codecs.UniversalDeserializer()
	own := func(name string) string { return name + "-" + e.ns }
	cleanup := func(del func(context.Context, string, metav1.DeleteOptions) error, name string) {
		e.t.Cleanup(func() { _ = del(context.Background(), name, metav1.DeleteOptions{}) })
	}
	rbacAPI, admission := cluster.Client.RbacV1(), cluster.Client.AdmissionregistrationV1()
	for _, doc := range strings.Split(string(rbac.Dispatcher), "\n---\n") {
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		require.NoError(e.t, err)
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			o.Namespace = e.ns
			_, err = cluster.Client.CoreV1().ServiceAccounts(e.ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			o.Namespace = e.ns
			_, err = rbacAPI.Roles(e.ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			o.Namespace = e.ns
			for i := range o.Subjects {
				o.Subjects[i].Namespace = e.ns
			}
			_, err = rbacAPI.RoleBindings(e.ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			if o.Name == "kiln-runner-exec" { // shared: bind rules name it
				if _, err = rbacAPI.ClusterRoles().Create(ctx, o, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
					err = nil
				}
				break
			}
			o.Name = own(o.Name)
			if _, err = rbacAPI.ClusterRoles().Create(ctx, o, metav1.CreateOptions{}); err == nil {
				cleanup(rbacAPI.ClusterRoles().Delete, o.Name)
			}
		case *rbacv1.ClusterRoleBinding:
			o.Name = own(o.Name)
			if o.RoleRef.Name != "kiln-runner-exec" {
				o.RoleRef.Name = own(o.RoleRef.Name)
			}
			for i := range o.Subjects {
				o.Subjects[i].Namespace = e.ns
			}
			if _, err = rbacAPI.ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{}); err == nil {
				cleanup(rbacAPI.ClusterRoleBindings().Delete, o.Name)
			}
		case *admissionregistrationv1.ValidatingAdmissionPolicy:
			o.Name = own(o.Name)
			for i := range o.Spec.MatchConditions {
				o.Spec.MatchConditions[i].Expression = strings.ReplaceAll(o.Spec.MatchConditions[i].Expression,
					"system:serviceaccount:kiln:", "system:serviceaccount:"+e.ns+":")
			}
			if _, err = admission.ValidatingAdmissionPolicies().Create(ctx, o, metav1.CreateOptions{}); err == nil {
				cleanup(admission.ValidatingAdmissionPolicies().Delete, o.Name)
			}
		case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
			o.Name, o.Spec.PolicyName = own(o.Name), own(o.Spec.PolicyName)
			if mr := o.Spec.MatchResources; mr != nil && mr.NamespaceSelector != nil {
				for i, r := range mr.NamespaceSelector.MatchExpressions {
					for j, v := range r.Values {
						if v == "kiln-builds" {
							mr.NamespaceSelector.MatchExpressions[i].Values[j] = e.ns
						}
					}
				}
			}
			if _, err = admission.ValidatingAdmissionPolicyBindings().Create(ctx, o, metav1.CreateOptions{}); err == nil {
				cleanup(admission.ValidatingAdmissionPolicyBindings().Delete, o.Name)
			}
		default:
			err = fmt.Errorf("unexpected object %T in dispatcher.yaml", obj)
		}
		require.NoError(e.t, err)
	}
	var _ runtime.Object
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// service account with a token from the real apiserver.
func (e *env) serviceAccountKubeconfig(sa string) string {
	exp := int64(3600)
	tr, err := cluster.Client.CoreV1().ServiceAccounts(e.ns).CreateToken(context.Background(), sa,
		&authenticationv1TokenRequest{Spec: tokenSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	require.NoError(e.t, err)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubebox"] = &clientcmdapi.Cluster{Server: cluster.Config.Host, CertificateAuthorityData: cluster.Config.CAData}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["kiln"] = &clientcmdapi.Context{Cluster: "kubebox", AuthInfo: sa, Namespace: e.ns}
	cfg.CurrentContext = "kiln"
	path := filepath.Join(e.t.TempDir(), "kubeconfig")
	require.NoError(e.t, clientcmd.WriteToFile(*cfg, path))
	return path
}

func (e *env) writeTemplates() {
	base, err := os.ReadFile("../../jobtemplates/templates/default.yaml")
	require.NoError(e.t, err)
	variant := func(name string, edit func(string) string) {
		y := strings.Replace(string(base), "name: default", "name: "+name, 1)
		require.NoError(e.t, os.WriteFile(filepath.Join(e.tmplDir, name+".yaml"), []byte(edit(y)), 0o644))
	}
	variant("short", func(y string) string {
		return strings.NewReplacer("activeDeadlineSeconds: 3600", "activeDeadlineSeconds: 6", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 5").Replace(y)
	})
	variant("badimage", func(y string) string {
		return strings.Replace(y, "image: "+RunnerImage, "image: kiln/no-such-image:1", 1)
	})
	variant("nowhere", func(y string) string {
		return strings.Replace(y, "serviceAccountName: kiln-runner", "serviceAccountName: kiln-runner\nnodeSelector:\n  kiln.dev/no-such-node: \"true\"", 1)
	})
	variant("site", func(y string) string {
		return strings.Replace(y, "  globs: []", "  globs: [\"index.html\"]", 1)
	})
	// No agent (docs/templates.md): the runner does everything but run one.
	variant("noagent", func(y string) string {
		return strings.Replace(y, "  adapter: claude-code", "  adapter: none", 1)
	})
	variant("tiny", func(y string) string {
		return strings.NewReplacer("    memory: 256Mi", "    memory: 48Mi", "    memory: 64Mi", "    memory: 32Mi").Replace(y)
	})
}

func (e *env) baseEnv() []string {
	return append(os.Environ(), "KILN_DATABASE_URL="+dbURL, "KILN_DB_SCHEMA="+e.schema)
}

// run runs a dispatcher subcommand and returns its stdout.
func (e *env) run(args ...string) string {
	e.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "dispatcher"), args...)
	cmd.Env = e.baseEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(e.t, err, "dispatcher %v: %s", args, stderr.String())
	return string(out)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// start runs a dispatcher serving this env and waits for /readyz.
func (e *env) start() *dispatcher {
	e.t.Helper()
	addr := freeAddr(e.t)
	logPath := filepath.Join(e.t.TempDir(), "dispatcher.log")
	logf, err := os.Create(logPath)
	require.NoError(e.t, err)
	cmd := exec.Command(filepath.Join(binDir, "dispatcher"), "serve")
	cmd.Env = append(e.baseEnv(), "KILN_LISTEN_ADDR="+addr, "KILN_KUBECONFIG="+e.kubeconfig,
		"KILN_BUILD_NAMESPACE="+e.ns, "KILN_TEMPLATES_DIR="+e.tmplDir, "KILN_DISPATCHER_URL="+e.service.URL, "KILN_LOG_LEVEL=info",
		"KILN_RECONCILE_INTERVAL=2s", "KILN_IMAGE_PULL_TIMEOUT=3s", "KILN_UNSCHEDULABLE_TIMEOUT=3s", "KILN_AUTH_CACHE_TTL=0s")
	cmd.Env = append(cmd.Env, e.extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(e.t, childproc.Start(cmd))
	d := &dispatcher{cmd: cmd, url: "http://" + addr, done: make(chan struct{}), log: logPath}
	d.api = &client.Client{BaseURL: d.url, Token: e.admin}
	go func() { _ = cmd.Wait(); logf.Close(); close(d.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, d)
	e.mu.Unlock()
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
		}
		if e.t.Failed() {
			b, _ := os.ReadFile(logPath)
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.Contains(l, `"msg":"request"`) && !strings.Contains(l, `"component":"river"`) {
					keep = append(keep, l)
				}
			}
			e.t.Logf("dispatcher log (%s, without requests and River):\n%s", addr, lastLines(strings.Join(keep, "\n"), 40))
		}
	})
	kbtest.WaitFor(e.t, 30*time.Second, "dispatcher ready", func(ctx context.Context) (bool, error) {
		select {
		case <-d.done:
			b, _ := os.ReadFile(logPath)
			e.t.Fatalf("dispatcher exited:\n%s", b)
		default:
		}
		err := d.api.Ready(ctx)
		return err == nil, err
	})
	return d
}

func (d *dispatcher) kill9() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The REST API is the client library's (dispatcher/client), as the admin;
// these helpers fail the test when it answers other than 2xx.

func (e *env) project(d *dispatcher, name string, maxConcurrent int) schema.Project {
	e.t.Helper()
	return e.createProject(d, schema.ProjectInput{Name: name, MaxConcurrent: maxConcurrent})
}

func (e *env) createProject(d *dispatcher, in schema.ProjectInput) schema.Project {
	e.t.Helper()
	p, err := d.api.CreateProject(context.Background(), in)
	require.NoError(e.t, err, "creating project %s", in.Name)
	return *p
}

func (e *env) submit(d *dispatcher, projectID string, spec schema.BuildSpec) string {
	e.t.Helper()
	acc, err := d.api.Submit(context.Background(), projectID, spec, "")
	require.NoError(e.t, err, "submitting %q", spec.Prompt)
	return acc.TaskID
}

func (e *env) get(d *dispatcher, id string) schema.Build {
	e.t.Helper()
	b, err := d.api.Get(context.Background(), id)
	require.NoError(e.t, err, "getting build %s", id)
	return *b
}

func (e *env) cancel(d *dispatcher, id, reason string) schema.Build {
	e.t.Helper()
	b, err := d.api.Cancel(context.Background(), id, reason)
	require.NoError(e.t, err, "cancelling build %s", id)
	return *b
}

// waitStatus waits for a build to reach one of the statuses, following its
// events (client.Wait); a build that ends otherwise fails the test at once.
func (e *env) waitStatus(d *dispatcher, id string, timeout time.Duration, want ...schema.Status) schema.Build {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	b, err := d.api.Wait(ctx, id, want...)
	if err != nil {
		if now, gerr := d.api.Get(context.Background(), id); gerr == nil {
			e.t.Fatalf("build %s to be %v: %v (it is %s: %q)", id, want, err, now.Status, now.Error)
		}
		e.t.Fatalf("build %s to be %v: %v", id, want, err)
	}
	return *b
}

func (e *env) events(d *dispatcher, id string) []schema.Event {
	e.t.Helper()
	evs, err := d.api.Events(context.Background(), id, 0)
	require.NoError(e.t, err, "events of build %s", id)
	return evs
}

func markerExists(id, name string) bool {
	_, err := os.Stat(filepath.Join(markerDir, id+"."+name))
	return err == nil
}

// dumpPods logs the namespace's pods, their statuses and log tails.
func (e *env) dumpPods() {
	ctx := context.Background()
	pods, err := cluster.Client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Logf("listing pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		st, _ := json.Marshal(p.Status)
		e.t.Logf("pod %s: %s", p.Name, st)
		if logs, err := cluster.Client.CoreV1().Pods(e.ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx); err == nil {
			e.t.Logf("pod %s logs:\n%s", p.Name, lastLines(string(logs), 20))
		}
	}
}

// dumpDB logs the builds and River jobs of this env.
func (e *env) dumpDB() {
	rows, err := e.pool.Query(context.Background(), `SELECT b.id, b.status, b.job_name, b.waiting_reason, b.error,
		coalesce(r.state::text, ''), coalesce(r.attempt, 0), coalesce(r.scheduled_at::text, '')
		FROM builds b LEFT JOIN river_job r ON r.id = b.river_job_id ORDER BY b.id`)
	if err != nil {
		e.t.Logf("dumping builds: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id, status, job, wait, berr, state, sched string
		var attempt int
		_ = rows.Scan(&id, &status, &job, &wait, &berr, &state, &attempt, &sched)
		e.t.Logf("build %s %s job=%q wait=%q err=%q river=%s attempt=%d scheduled=%s", id, status, job, wait, berr, state, attempt, sched)
	}
}

// proxy forwards a request to a live dispatcher, round robin.
func (e *env) proxy(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	var live []*dispatcher
	for _, d := range e.procs {
		select {
		case <-d.done:
		default:
			live = append(live, d)
		}
	}
	e.next++
	n := e.next
	e.mu.Unlock()
	if len(live) == 0 {
		http.Error(w, "no dispatcher is running", http.StatusBadGateway)
		return
	}
	target, _ := url.Parse(live[n%len(live)].url)
	httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
}
