package kubebox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/tests/kubebox"
)

// shared is the cluster most tests of this package use: one start (about ten
// seconds) instead of one per test on a two-core machine.
var shared *kubebox.Cluster

func TestMain(m *testing.M) {
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := kubebox.Start(ctx, kubebox.Options{Images: testImages()})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the shared kubebox cluster:", err)
		os.Exit(1)
	}
	shared = c
	code := m.Run()
	c.Stop()
	if code == 0 {
		// Stop ends the node, its informers and every child's waiter. Idle
		// keep-alive connections of clients and kubebox's spawner thread
		// (see process.go) stay by design.
		if err := goleak.Find(ignore,
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
			goleak.IgnoreAnyFunction("github.com/kilnbuild/kiln/tests/kubebox.spawn.func1.1"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after Stop:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testImages maps the images these tests use to host programs.
func testImages() map[string]string {
	return map[string]string{"sleep": "/bin/sleep", "sh": "/bin/sh"}
}

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	ns, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kubebox-test-"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

func TestClusterIsReady(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := shared.Client()

	node, err := client.CoreV1().Nodes().Get(ctx, shared.NodeName(), metav1.GetOptions{})
	require.NoError(t, err)
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	require.True(t, ready, "node conditions: %+v", node.Status.Conditions)

	svc, err := client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "10.0.0.1", svc.Spec.ClusterIP)

	cm, err := client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, string(shared.CACert()), cm.Data["ca.crt"])

	_, err = os.Stat(shared.KubeconfigPath())
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(shared.Host(), "https://127.0.0.1:"), shared.Host())
}

func TestKubectlVersion(t *testing.T) {
	t.Parallel()
	kubectl := kubectlPath(t)
	cmd := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", shared.KubeconfigPath(), "version", "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // the version-skew warning of an older kubectl goes here
	out, err := cmd.Output()
	require.NoError(t, err, "%s%s", out, &stderr)
	var v struct {
		ServerVersion struct {
			Major, Minor, GitVersion, GitTreeState string
		} `json:"serverVersion"`
	}
	require.NoError(t, json.Unmarshal(out, &v), "%s", out)
	require.Equal(t, kubebox.Version, v.ServerVersion.GitVersion)
	require.Equal(t, "1", v.ServerVersion.Major)
	require.Equal(t, "37", v.ServerVersion.Minor)
}

func kubectlPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	return path
}

func TestSchedulerReportsUnschedulable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := shared.Client()
	ns := namespace(t, client)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "too-big"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "main", Image: "sleep", Args: []string{"60"},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1000"),
			}},
		}}},
	}
	_, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)

	var cond corev1.PodCondition
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				cond = c
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err)
	require.Equal(t, corev1.PodReasonUnschedulable, cond.Reason)
	require.Contains(t, cond.Message, "Insufficient cpu")
}

func TestJobControllerCreatesPods(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := shared.Client()
	ns := namespace(t, client)

	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "hello"},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "main", Image: "sleep", Args: []string{"1"}}},
			}},
		},
	}
	_, err := client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	require.NoError(t, err)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=hello"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 1 && pods.Items[0].Spec.NodeName == shared.NodeName(), nil
	})
	require.NoError(t, err, "the job controller makes a pod and the scheduler binds it to the node")
}

func TestRBACDeniesServiceAccountToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := shared.Client()
	ns := namespace(t, admin)

	_, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "robot"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "robot", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := &rest.Config{
		Host:            shared.Host(),
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: shared.CACert()},
	}
	robot, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	// The apiserver authenticates the token as the service account...
	review, err := robot.AuthenticationV1().SelfSubjectReviews().Create(ctx,
		&authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Equal(t, "system:serviceaccount:"+ns+":robot", review.Status.UserInfo.Username)

	// ...and RBAC denies what it was not granted.
	_, err = robot.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "want Forbidden, got %v", err)
	_, err = robot.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "want Forbidden, got %v", err)

	// A Role and RoleBinding grant it exactly pods/list in its namespace.
	_, err = admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "robot-reads-pods"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "robot", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := robot.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	require.NoError(t, err, "the binding grants pods/list")
	_, err = robot.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "want Forbidden, got %v", err)
}

func TestTwoClustersAtOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var logs bytes.Buffer // written only while other runs, read after Stop
	other, err := kubebox.Start(ctx, kubebox.Options{Dir: t.TempDir(), NodeName: "other-node", Log: &logs})
	require.NoError(t, err)
	defer other.Stop()

	require.NotEqual(t, shared.Host(), other.Host())
	_, err = other.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "only-in-other"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = shared.Client().CoreV1().Namespaces().Get(ctx, "only-in-other", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "clusters share no state, got %v", err)
	nodes, err := other.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, nodes.Items, 1)
	require.Equal(t, "other-node", nodes.Items[0].Name)

	other.Stop()
	other.Stop() // idempotent
	for _, prefix := range []string{"[etcd] ", "[kube-apiserver] ", "[kube-controller-manager] ", "[kube-scheduler] ", "[node] "} {
		require.Contains(t, logs.String(), "\n"+prefix, "Options.Log gets every component's lines")
	}
	_, err = other.Client().CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	require.Error(t, err, "the stopped cluster's apiserver is gone")
	_, err = shared.Client().CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	require.NoError(t, err, "stopping one cluster leaves the other running")
}

// TestCLIUpDown runs the kubebox program the way other programs (the
// product's end-to-end tests, make demo) do: up in the background, wait for
// D/ready, use D/kubeconfig, then down.
func TestCLIUpDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a third cluster")
	}
	t.Parallel()
	ctx := t.Context()
	bin := filepath.Join(t.TempDir(), "kubebox")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.CommandContext(ctx, goCmd, "build", "-o", bin, "./cmd/kubebox").CombinedOutput()
	require.NoError(t, err, "%s", out)

	dir := t.TempDir()
	var logs bytes.Buffer
	up := exec.Command(bin, "up", "--dir", dir, "--image", "sleep=/bin/sleep", "--node-name", "cli-node")
	up.Stdout, up.Stderr = &logs, &logs
	// Not up.Start: with a parent-death signal, the child would die when
	// the thread that forked it ends, and the nodes of the clusters other
	// tests stop end threads.
	require.NoError(t, kubebox.StartChild(up))
	exited := make(chan error, 1)
	go func() { exited <- up.Wait() }()
	t.Cleanup(func() { _ = up.Process.Kill() })

	ready := filepath.Join(dir, "ready")
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		select {
		case err := <-exited:
			return false, fmt.Errorf("up exited early: %v", err)
		default:
		}
		_, err := os.Stat(ready)
		return err == nil, nil
	})
	require.NoError(t, err, "%s", &logs)
	pid, err := os.ReadFile(filepath.Join(dir, "pid"))
	require.NoError(t, err)
	require.Equal(t, fmt.Sprint(up.Process.Pid), strings.TrimSpace(string(pid)))

	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", filepath.Join(dir, "kubeconfig"),
			"get", "nodes", "-o", "name").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, "node/cli-node", strings.TrimSpace(string(out)))
	}

	out, err = exec.CommandContext(ctx, bin, "down", "--dir", dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	select {
	case err := <-exited:
		require.NoError(t, err, "up exits 0 on SIGTERM; output:\n%s", &logs)
	case <-time.After(10 * time.Second):
		t.Fatal("up still running after down returned")
	}
	for _, name := range []string{"pid", "ready"} {
		_, err := os.Stat(filepath.Join(dir, name))
		require.True(t, os.IsNotExist(err), "%s removed on stop", name)
	}
}

// TestJobTTLAfterFinished: the ttl-after-finished controller deletes a
// finished Job (Kiln's Jobs set ttlSecondsAfterFinished).
func TestJobTTLAfterFinished(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := shared.Client()
	ns := namespace(t, client)

	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "short-lived"},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To[int32](0),
			TTLSecondsAfterFinished: ptr.To[int32](1),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "main", Image: "sh", Command: []string{"sh", "-c", "exit 0"}}},
			}},
		},
	}
	_, err := client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	require.NoError(t, err)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.BatchV1().Jobs(ns).Get(ctx, job.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	require.NoError(t, err, "the finished Job is deleted")
}
