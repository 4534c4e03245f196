package workspace_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kilnbuild/kiln/deploy/base/rbac"
	"github.com/kilnbuild/kiln/dispatcher/internal/workspace"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/gitserver"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

// sshShim stands in for ssh (no sshd runs here): it records its arguments,
// the key's and known_hosts' contents as it read them through the options
// it was given, and runs the remote command (git-upload-pack '<path>')
// locally, as sshd would on the server.
const sshShim = `#!/bin/sh
log=%s
key= hosts= strict=
prev=
for a in "$@"; do
  case "$prev" in
    -i) key=$a ;;
    -o) case "$a" in UserKnownHostsFile=*) hosts=${a#UserKnownHostsFile=} ;; StrictHostKeyChecking=*) strict=${a#StrictHostKeyChecking=} ;; esac ;;
  esac
  prev=$a
  last=$a
done
{ echo "args: $*"; echo "strict: $strict"; echo "key: $(cat "$key")"; echo "hosts: $(cat "$hosts")"; } >> "$log"
exec sh -c "$last"
`

var (
	sshLog  string // what the ssh stand-in recorded
	cluster *kbtest.Cluster
	// dispatcher acts as kiln/kiln-dispatcher with exactly
	// deploy/base/rbac/dispatcher.yaml's rights; runner as
	// kiln-builds/kiln-runner with none but what the workspace grants.
	dispatcher, runner *rest.Config
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	// Pods inherit the node's PATH: put a stand-in ssh first (see sshShim).
	shimDir, err := os.MkdirTemp(kbtest.HostTempDir(), "workspace-ssh-")
	if err == nil {
		sshLog = shimDir + "/ssh.log"
		err = os.WriteFile(shimDir+"/ssh", []byte(fmt.Sprintf(sshShim, sshLog)), 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(shimDir)
	os.Setenv("PATH", shimDir+":"+os.Getenv("PATH"))
	c, stop, err := kbtest.Up(map[string]string{workspace.DefaultImage: "/bin/sh"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	if err := setupRBAC(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		stop(false)
		os.Exit(1)
	}
	code := m.Run()
	stop(code == 0)
	os.Exit(code)
}

// setupRBAC applies dispatcher.yaml as deployed and makes the two identities' configs.
func setupRBAC() error {
	ctx := context.Background()
	k := cluster.Client
	for _, ns := range []string{"kiln", "kiln-builds"} {
		if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for _, doc := range strings.Split(string(rbac.Dispatcher), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return err
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = k.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = k.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = k.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = k.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = k.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *admissionv1.ValidatingAdmissionPolicy:
			_, err = k.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, metav1.CreateOptions{})
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			_, err = k.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			err = fmt.Errorf("unexpected %T in dispatcher.yaml", obj)
		}
		if err != nil {
			return fmt.Errorf("applying dispatcher.yaml: %w", err)
		}
	}
	if _, err := k.CoreV1().ServiceAccounts("kiln-builds").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kiln-runner"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	var err error
	if dispatcher, err = tokenConfig("kiln", "kiln-dispatcher"); err != nil {
		return err
	}
	if runner, err = tokenConfig("kiln-builds", "kiln-runner"); err != nil {
		return err
	}
	return waitForPolicy(ctx)
}

// waitForPolicy waits until the apiserver enforces the admission policy (it
// loads policies asynchronously): a probe write as the dispatcher in an
// unlabelled namespace is refused.
func waitForPolicy(ctx context.Context) error {
	const ns = "policy-probe"
	if _, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	k, err := kubernetes.NewForConfig(dispatcher)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := k.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, metav1.CreateOptions{})
		switch {
		case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
			return cluster.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		case err == nil:
			if err := cluster.Client.CoreV1().Secrets(ns).Delete(ctx, "probe", metav1.DeleteOptions{}); err != nil {
				return err
			}
		case !apierrors.IsAlreadyExists(err):
			return fmt.Errorf("probing the admission policy: %w", err)
		}
		if time.Now().After(deadline) {
			return errors.New("the admission policy is not enforced after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tokenConfig authenticates as a ServiceAccount with a token from the real apiserver.
func tokenConfig(ns, sa string) (*rest.Config, error) {
	exp := int64(3600)
	tr, err := cluster.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for %s/%s: %w", ns, sa, err)
	}
	return &rest.Config{Host: cluster.Config.Host, BearerToken: tr.Status.Token, QPS: 100, Burst: 200,
		TLSClientConfig: rest.TLSClientConfig{CAData: cluster.Config.CAData}}, nil
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	m   *workspace.Manager
	k   kubernetes.Interface // as the dispatcher
}

func setup(t *testing.T) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kubebox")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	k, err := kubernetes.NewForConfig(dispatcher)
	require.NoError(t, err)
	return &fixture{t: t, ctx: ctx, m: workspace.NewManager(k, nil), k: k}
}

// spec is a workspace of a new project in its own namespace.
func spec(repoURL string, creds *schema.Credentials) workspace.Spec {
	id := uuid.NewString()
	return workspace.Spec{
		ProjectID: id, ProjectName: "demo", Namespace: "kiln-p-" + id[:8], Name: "ws",
		Env: map[string]string{"PLAIN": "visible"}, RepoURL: repoURL, Branch: "main", Credentials: creds,
	}
}

// provision runs every Ensure twice, in the orchestration's order.
func (f *fixture) provision(s workspace.Spec, secretEnv, addonEnv map[string]string) {
	f.t.Helper()
	for range 2 {
		require.NoError(f.t, f.m.EnsureNamespace(f.ctx, s), "namespace")
		require.NoError(f.t, f.m.EnsureServiceAccount(f.ctx, s), "service account")
		require.NoError(f.t, f.m.EnsureSecrets(f.ctx, s, secretEnv), "secrets")
		require.NoError(f.t, f.m.SetEnv(f.ctx, s, addonEnv), "add-on env")
		require.NoError(f.t, f.m.EnsureStatefulSet(f.ctx, s), "statefulset")
		require.NoError(f.t, f.m.EnsureRunnerAccess(f.ctx, s), "runner access")
	}
}

// waitReady calls CheckWorkspace (a bounded watch each time) until it
// answers ready or an error.
func (f *fixture) waitReady(s workspace.Spec) error {
	f.t.Helper()
	for calls := 0; ; calls++ {
		ready, err := f.m.CheckWorkspace(f.ctx, s, 5*time.Second)
		if ready || err != nil {
			return err
		}
		require.Less(f.t, calls, 30, "workspace not ready")
	}
}

// teardown runs the Deletes in reverse order until each reports gone.
func (f *fixture) teardown(s workspace.Spec) {
	f.t.Helper()
	for _, step := range []struct {
		name string
		del  func(context.Context, workspace.Spec) (bool, error)
	}{
		{"runner access", f.m.DeleteRunnerAccess},
		{"statefulset", f.m.DeleteStatefulSet},
		{"secrets", f.m.DeleteSecrets},
		{"service account", f.m.DeleteServiceAccount},
		{"namespace", f.m.DeleteNamespace},
	} {
		t0 := time.Now()
		kbtest.WaitFor(f.t, 2*time.Minute, "deleting "+step.name, func(ctx context.Context) (bool, error) {
			return step.del(ctx, s)
		})
		f.t.Logf("%s gone in %s", step.name, time.Since(t0).Round(time.Millisecond))
		gone, err := step.del(f.ctx, s) // idempotent once gone
		require.NoError(f.t, err)
		require.True(f.t, gone, step.name)
	}
	left, err := f.m.Leftovers(f.ctx, s)
	require.NoError(f.t, err)
	require.Empty(f.t, left)
}

// execAs runs argv in the workspace container with cfg's identity.
func execAs(t *testing.T, cfg *rest.Config, s workspace.Spec, argv ...string) (string, error) {
	t.Helper()
	k, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	u := k.CoreV1().RESTClient().Post().Resource("pods").Namespace(s.Namespace).Name(workspace.PodName(s)).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: workspace.ContainerName, Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
	ex, err := remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
	require.NoError(t, err)
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// A private repository: the workspace gets ready with the clone at the
// branch head, the token nowhere the agent can see, secret_env and add-on
// variables in its environment; the runner (through the RoleBinding only)
// can exec into it; the Deletes leave nothing.
func TestWorkspaceOfPrivateRepository(t *testing.T) {
	f := setup(t)
	const token = "tok-7f3a9c-secret"
	srv := gitserver.Start(t, gitserver.Options{Username: "bot", Token: token})
	url := srv.NewRepo(t, "acme/web", "main", map[string]string{"README.md": "hello\n"})
	s := spec(url, &schema.Credentials{Username: "bot", Token: token})
	s.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resourceMust("512Mi")}}

	start := time.Now()
	f.provision(s, map[string]string{"API_KEY": "k-123"}, map[string]string{"DATABASE_URL": "postgres://u:p@h/db"})
	require.NoError(t, f.waitReady(s))
	t.Logf("ensured twice and ready in %s", time.Since(start).Round(time.Millisecond))

	head, err := execAs(t, runner, s, "git", "-C", workspace.Workdir, "rev-parse", "HEAD")
	require.NoError(t, err, "the runner execs into the workspace")
	assert.Equal(t, srv.Head(t, "acme/web", "main"), strings.TrimSpace(head), "the clone is at the branch head")
	branch, err := execAs(t, runner, s, "git", "-C", workspace.Workdir, "rev-parse", "--abbrev-ref", "HEAD")
	require.NoError(t, err)
	assert.Equal(t, "main", strings.TrimSpace(branch))
	config, err := execAs(t, runner, s, "cat", workspace.Workdir+"/.git/config")
	require.NoError(t, err)
	assert.NotContains(t, config, token, ".git/config holds no token")
	assert.NotContains(t, config, "credential", ".git/config holds no credential helper")
	assert.Contains(t, config, "url = "+url, "the remote URL is the credential-free one")

	env, err := execAs(t, runner, s, "env")
	require.NoError(t, err)
	assert.NotContains(t, env, token, "the main container's environment holds no token")
	for _, want := range []string{"API_KEY=k-123", "DATABASE_URL=postgres://u:p@h/db", "PLAIN=visible", "HOME=" + workspace.Home} {
		assert.Contains(t, env, want)
	}
	_, err = execAs(t, runner, s, "test", "!", "-e", "/var/run/kiln/git/git-token")
	assert.NoError(t, err, "the git Secret is not mounted in the main container")
	pwd, err := execAs(t, runner, s, "pwd")
	require.NoError(t, err)
	assert.Equal(t, workspace.Workdir, strings.TrimSpace(pwd))

	var authed int
	for _, r := range srv.Requests() {
		if r.Authenticated {
			authed++
			assert.Equal(t, "bot", r.User)
		}
	}
	assert.NotZero(t, authed, "the clone authenticated")

	// The dispatcher itself holds no exec right: it granted it with bind only.
	_, err = execAs(t, dispatcher, s, "true")
	require.Error(t, err, "the dispatcher cannot exec")
	assert.Contains(t, err.Error(), "forbidden")

	left, err := f.m.Leftovers(f.ctx, s)
	require.NoError(t, err)
	ns := s.Namespace
	assert.ElementsMatch(t, []string{"Namespace/" + ns, "ServiceAccount/" + ns + "/ws", "Secret/" + ns + "/ws-env", "Secret/" + ns + "/ws-git",
		"StatefulSet/" + ns + "/ws", "RoleBinding/" + ns + "/kiln-runner", "Pod/" + ns + "/ws-0"}, left)

	start = time.Now()
	f.teardown(s)
	t.Logf("deleted (namespace gone) in %s", time.Since(start).Round(time.Millisecond))
	_, err = cluster.Client.CoreV1().Namespaces().Get(f.ctx, ns, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the project's namespace is deleted: %v", err)
}

// A wrong token: CheckWorkspace names git's authentication failure, never the token.
func TestWrongTokenIsACloneError(t *testing.T) {
	f := setup(t)
	srv := gitserver.Start(t, gitserver.Options{Username: "bot", Token: "the-right-one"})
	url := srv.NewRepo(t, "private", "main", map[string]string{"a": "b"})
	const wrong = "wrong-token-5e1d"
	s := spec(url, &schema.Credentials{Username: "bot", Token: wrong})
	f.provision(s, nil, nil)

	err := f.waitReady(s)
	var ce *workspace.CloneError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Message, "Authentication failed")
	t.Logf("clone error: %v", err)
	assert.NotZero(t, ce.ExitCode)
	assert.NotContains(t, err.Error(), wrong)
	assert.NotContains(t, err.Error(), "the-right-one")
	f.teardown(s)
}

// A public repository needs no git Secret; a missing branch names git's message.
func TestPublicRepositoryAndMissingBranch(t *testing.T) {
	f := setup(t)
	dir := t.TempDir()
	run := func(args ...string) {
		out, err := execCommand(dir, args...)
		require.NoError(t, err, "%v: %s", args, out)
	}
	run("git", "init", "--quiet", "--initial-branch=main", "repo")
	require.NoError(t, os.WriteFile(dir+"/repo/f", []byte("x"), 0o644))
	run("git", "-C", "repo", "add", "f")
	run("git", "-C", "repo", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "--quiet", "-m", "one")

	s := spec("file://"+dir+"/repo", nil)
	f.provision(s, nil, nil)
	require.NoError(t, f.waitReady(s))
	_, err := cluster.Client.CoreV1().Secrets(s.Namespace).Get(f.ctx, workspace.GitSecretName(s), metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no git Secret without credentials")
	f.teardown(s)

	s = spec("file://"+dir+"/repo", nil)
	s.Branch = "no-such-branch"
	f.provision(s, nil, nil)
	err = f.waitReady(s)
	var ce *workspace.CloneError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Message, "no-such-branch")
	f.teardown(s)
}

// Objects of Kiln's names without Kiln's labels are refused and left alone.
func TestObjectsNotOursAreRefusedAndKept(t *testing.T) {
	f := setup(t)
	s := spec("http://127.0.0.1:1/none.git", &schema.Credentials{Token: "t"})
	// An operator's Kiln namespace (no project label): used, never deleted.
	_, err := cluster.Client.CoreV1().Namespaces().Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: s.Namespace, Labels: map[string]string{workspace.LabelManagedBy: workspace.ManagedBy}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().Namespaces().Delete(context.Background(), s.Namespace, metav1.DeleteOptions{})
	})
	require.NoError(t, f.m.EnsureNamespace(f.ctx, s))

	other := map[string]string{workspace.LabelManagedBy: workspace.ManagedBy, workspace.LabelProject: uuid.NewString()}
	meta := func(name string, l map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: s.Namespace, Labels: l}
	}
	admin := cluster.Client
	_, err = admin.CoreV1().ServiceAccounts(s.Namespace).Create(f.ctx, &corev1.ServiceAccount{ObjectMeta: meta(s.Name, nil)}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.CoreV1().Secrets(s.Namespace).Create(f.ctx, &corev1.Secret{ObjectMeta: meta(workspace.EnvSecretName(s), other)}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.RbacV1().RoleBindings(s.Namespace).Create(f.ctx, &rbacv1.RoleBinding{ObjectMeta: meta(workspace.RunnerBindingName, nil),
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	for name, err := range map[string]error{
		"service account": f.m.EnsureServiceAccount(f.ctx, s),
		"secrets":         f.m.EnsureSecrets(f.ctx, s, map[string]string{"K": "v"}),
		"set env":         f.m.SetEnv(f.ctx, s, map[string]string{"K": "v"}),
		"runner access":   f.m.EnsureRunnerAccess(f.ctx, s),
	} {
		require.ErrorIs(t, err, workspace.ErrNotOurs, name)
		assert.Contains(t, err.Error(), s.Namespace+"/", name+": names the object")
	}
	sec, err := admin.CoreV1().Secrets(s.Namespace).Get(f.ctx, workspace.EnvSecretName(s), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, sec.Data, "another project's Secret is not changed")

	// The Deletes leave them (nothing of this project is left) and the namespace stays.
	f.teardown(s)
	_, err = admin.CoreV1().ServiceAccounts(s.Namespace).Get(f.ctx, s.Name, metav1.GetOptions{})
	assert.NoError(t, err)
	_, err = admin.RbacV1().RoleBindings(s.Namespace).Get(f.ctx, workspace.RunnerBindingName, metav1.GetOptions{})
	assert.NoError(t, err)
	ns, err := admin.CoreV1().Namespaces().Get(f.ctx, s.Namespace, metav1.GetOptions{})
	require.NoError(t, err, "a pre-existing Kiln namespace is not deleted")
	assert.Nil(t, ns.DeletionTimestamp)
}

// A namespace that is not Kiln's, or is another project's, is refused.
func TestForeignNamespacesAreRefused(t *testing.T) {
	f := setup(t)
	for name, l := range map[string]map[string]string{
		"unlabelled":      nil,
		"another project": {workspace.LabelManagedBy: workspace.ManagedBy, workspace.LabelProject: uuid.NewString()},
	} {
		s := spec("http://127.0.0.1:1/none.git", nil)
		_, err := cluster.Client.CoreV1().Namespaces().Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.Namespace, Labels: l}}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = cluster.Client.CoreV1().Namespaces().Delete(context.Background(), s.Namespace, metav1.DeleteOptions{})
		})
		err = f.m.EnsureNamespace(f.ctx, s)
		require.ErrorIs(t, err, workspace.ErrNotOurs, name)
		assert.Contains(t, err.Error(), s.Namespace)
		gone, err := f.m.DeleteNamespace(f.ctx, s)
		require.NoError(t, err)
		assert.True(t, gone, "nothing of ours")
		_, err = cluster.Client.CoreV1().Namespaces().Get(f.ctx, s.Namespace, metav1.GetOptions{})
		assert.NoError(t, err, "%s: not deleted", name)
	}
}

// The admission policy confines the dispatcher's writes to Kiln namespaces,
// even though its ClusterRole is cluster-wide; its builds namespace is exempt.
func TestDispatcherWritesOnlyInKilnNamespaces(t *testing.T) {
	f := setup(t)
	ns := "team-" + uuid.NewString()[:8]
	_, err := cluster.Client.CoreV1().Namespaces().Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	_, err = cluster.Client.CoreV1().Secrets(ns).Create(f.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	refused := func(what string, err error) {
		t.Helper()
		require.Error(t, err, what)
		assert.True(t, apierrors.IsForbidden(err) || apierrors.IsInvalid(err), "%s: %v", what, err)
		assert.Contains(t, err.Error(), "kiln", what+": the policy's message")
	}
	_, err = f.k.CoreV1().Secrets(ns).Create(f.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine"}}, metav1.CreateOptions{})
	refused("creating a secret in a team namespace", err)
	refused("deleting a team's secret", f.k.CoreV1().Secrets(ns).Delete(f.ctx, "theirs", metav1.DeleteOptions{}))
	_, err = f.k.CoreV1().ServiceAccounts(ns).Create(f.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	refused("creating a service account in a team namespace", err)
	_, err = f.k.RbacV1().RoleBindings(ns).Create(f.ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kiln-runner"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: workspace.RunnerClusterRole},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kiln-runner", Namespace: "kiln-builds"}}}, metav1.CreateOptions{})
	refused("granting exec in a team namespace", err)
	refused("deleting a team namespace", f.k.CoreV1().Namespaces().Delete(f.ctx, ns, metav1.DeleteOptions{}))
	_, err = f.k.CoreV1().Namespaces().Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "unlabelled-" + ns}}, metav1.CreateOptions{})
	refused("creating an unlabelled namespace", err)

	// RBAC alone refuses what the ClusterRole does not grant.
	_, err = f.k.CoreV1().ConfigMaps(ns).Create(f.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	assert.True(t, apierrors.IsForbidden(err), "configmaps: %v", err)
	_, err = f.k.RbacV1().ClusterRoleBindings().Create(f.ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x-" + ns},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: workspace.RunnerClusterRole}}, metav1.CreateOptions{})
	assert.True(t, apierrors.IsForbidden(err), "clusterrolebindings: %v", err)

	// The builds namespace is exempt: build Secrets are written there.
	_, err = f.k.CoreV1().Secrets("kiln-builds").Create(f.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "build-" + ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, f.k.CoreV1().Secrets("kiln-builds").Delete(f.ctx, "build-"+ns, metav1.DeleteOptions{}))
	_, err = cluster.Client.CoreV1().Secrets(ns).Get(f.ctx, "theirs", metav1.GetOptions{})
	require.NoError(t, err, "the team's secret is still there")
}

func TestSecretEnvNamesAreChecked(t *testing.T) {
	f := setup(t)
	s := spec("http://127.0.0.1:1/none.git", nil)
	err := f.m.EnsureSecrets(f.ctx, s, map[string]string{"NOT-A-NAME": "v"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "v\"", "no value in the error")
	require.Error(t, f.m.SetEnv(f.ctx, s, map[string]string{"1X": "v"}))
}

func execCommand(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

func resourceMust(q string) resource.Quantity { return resource.MustParse(q) }

// SSH credentials: the clone runs ssh with the mounted key, the mounted
// known_hosts and strict host key checking; nothing of it stays in the clone.
func TestWorkspaceOverSSH(t *testing.T) {
	f := setup(t)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"git", "init", "--quiet", "--initial-branch=main", "src"},
		{"git", "-C", "src", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "--quiet", "--allow-empty", "-m", "one"},
		{"git", "clone", "--quiet", "--bare", "src", "repo.git"},
	} {
		out, err := execCommand(dir, args...)
		require.NoError(t, err, "%v: %s", args, out)
	}
	key := "-----BEGIN OPENSSH PRIVATE KEY-----\nfake-" + uuid.NewString() + "\n-----END OPENSSH PRIVATE KEY-----\n"
	s := spec("git@git.example.invalid:"+dir+"/repo.git", &schema.Credentials{SSHPrivateKey: key, KnownHosts: "git.example.invalid ssh-ed25519 AAAAC3Nza"})
	f.provision(s, nil, nil)
	require.NoError(t, f.waitReady(s))

	head, err := execAs(t, runner, s, "git", "-C", workspace.Workdir, "rev-parse", "HEAD")
	require.NoError(t, err)
	want, err := execCommand(dir, "git", "-C", "repo.git", "rev-parse", "main")
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(want)), strings.TrimSpace(head))
	log, err := os.ReadFile(sshLog)
	require.NoError(t, err)
	assert.Contains(t, string(log), "-o IdentitiesOnly=yes")
	assert.Contains(t, string(log), "strict: yes")
	assert.Contains(t, string(log), "key: "+strings.TrimSpace(key), "ssh read the mounted key")
	assert.Contains(t, string(log), "hosts: git.example.invalid ssh-ed25519 AAAAC3Nza", "ssh read the mounted known_hosts")
	assert.Contains(t, string(log), "git@git.example.invalid")
	config, err := execAs(t, runner, s, "cat", workspace.Workdir+"/.git/config")
	require.NoError(t, err)
	assert.NotContains(t, config, "sshCommand")
	assert.NotContains(t, config, "ssh-private-key")
	env, err := execAs(t, runner, s, "env")
	require.NoError(t, err)
	assert.NotContains(t, env, "GIT_SSH_COMMAND")
	assert.NotContains(t, env, "fake-")
	f.teardown(s)
}

// EnsureSecrets converges on a retry: new credentials replace the git
// Secret's, and secret_env is merged into the env Secret without dropping
// what SetEnv wrote.
func TestEnsureSecretsConverges(t *testing.T) {
	f := setup(t)
	s := spec("http://127.0.0.1:1/none.git", &schema.Credentials{Username: "bot", Token: "old"})
	require.NoError(t, f.m.EnsureNamespace(f.ctx, s))
	require.NoError(t, f.m.EnsureSecrets(f.ctx, s, map[string]string{"A": "1"}))
	require.NoError(t, f.m.SetEnv(f.ctx, s, map[string]string{"REDIS_URL": "redis://x"}))
	s.Credentials.Token = "new"
	require.NoError(t, f.m.EnsureSecrets(f.ctx, s, map[string]string{"A": "2", "B": "3"}))

	git, err := cluster.Client.CoreV1().Secrets(s.Namespace).Get(f.ctx, workspace.GitSecretName(s), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "new", string(git.Data["git-token"]))
	env, err := cluster.Client.CoreV1().Secrets(s.Namespace).Get(f.ctx, workspace.EnvSecretName(s), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"A": []byte("2"), "B": []byte("3"), "REDIS_URL": []byte("redis://x")}, env.Data)
	f.teardown(s)
}

// An image the node cannot pull is a *PodError, not a wait until a deadline.
func TestImagePullFailureIsAPodError(t *testing.T) {
	f := setup(t)
	s := spec("http://127.0.0.1:1/none.git", nil)
	s.Image = "kilnbuild/no-such-image:1"
	f.provision(s, nil, nil)
	err := f.waitReady(s)
	var pe *workspace.PodError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, workspace.CloneContainerName, pe.Container)
	assert.Contains(t, []string{"ErrImagePull", "ImagePullBackOff"}, pe.Reason)
	f.teardown(s)
}
