package kubebox_test

// End-to-end tests of the process node (tests/kubebox/node) against the
// shared cluster of this package: real apiserver, controllers and scheduler.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/tests/kubebox/node"
)

// helperEnv turns this test binary into a small program run inside pods.
const helperEnv = "KUBEBOX_NODE_TEST_HELPER"

func init() {
	switch os.Getenv(helperEnv) {
	case "":
		return
	case "incluster":
		os.Exit(helperInCluster())
	case "sigterm":
		os.Exit(helperSigterm(os.Args[1]))
	case "echo":
		os.Exit(helperEcho(os.Args[1]))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperInCluster lists the pods of its namespace with the in-cluster config.
func helperInCluster() int {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		fmt.Println("in-cluster config:", err)
		return 1
	}
	ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	pods, err := client.CoreV1().Pods(string(ns)).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		fmt.Println("listing pods:", err)
		return 1
	}
	for _, p := range pods.Items {
		fmt.Println("pod", p.Name)
	}
	return 0
}

// helperSigterm writes marker+".ready", waits for SIGTERM, writes marker.
func helperSigterm(marker string) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	if err := os.WriteFile(marker+".ready", []byte("ready"), 0o644); err != nil {
		return 1
	}
	s := <-sig
	if err := os.WriteFile(marker, []byte(s.String()), 0o644); err != nil {
		return 1
	}
	return 0
}

// helperEcho serves a TCP echo on a free port and writes the port to file.
func helperEcho(file string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if err := os.WriteFile(file, []byte(port), 0o644); err != nil {
		return 1
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer conn.Close()
			_, _ = io.Copy(conn, conn)
		}()
	}
}

func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	return exe
}

// nodeNamespace creates a namespace for one test and deletes it afterwards.
func nodeNamespace(t *testing.T) string {
	t.Helper()
	ns, err := shared.Client().CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "node-test-"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = shared.Client().CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

func shPod(name, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   "sh",
				Command: []string{"sh", "-c", script},
			}},
		},
	}
}

func shJob(name, script string) *batchv1.Job {
	pod := shPod("", script)
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template:     corev1.PodTemplateSpec{Spec: pod.Spec},
		},
	}
}

func createPod(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	created, err := shared.Client().CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	require.NoError(t, err)
	return created
}

// waitPod polls the pod until cond holds, failing the test after timeout.
func waitPod(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := shared.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		var status any
		if last != nil {
			status = last.Status
		}
		t.Fatalf("pod %s/%s: waiting for %s: %v; last status: %+v", ns, name, what, err, status)
	}
	return last
}

func podPhase(phase corev1.PodPhase) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return p.Status.Phase == phase }
}

func waitJobCondition(t *testing.T, ns, name string, ct batchv1.JobConditionType, timeout time.Duration) *batchv1.JobCondition {
	t.Helper()
	var found *batchv1.JobCondition
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		j, err := shared.Client().BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range j.Status.Conditions {
			if c.Type == ct && c.Status == corev1.ConditionTrue {
				found = c.DeepCopy()
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "job %s/%s never got condition %s", ns, name, ct)
	return found
}

func jobPod(t *testing.T, ns, job string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := shared.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		pod = &pods.Items[0]
		return true, nil
	})
	require.NoError(t, err, "no pod for job %s", job)
	return pod
}

func terminated(p *corev1.Pod, container string) *corev1.ContainerStateTerminated {
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if cs.Name == container {
			return cs.State.Terminated
		}
	}
	return nil
}

func TestNodeJobCompletes(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	_, err := shared.Client().BatchV1().Jobs(ns).Create(context.Background(),
		shJob("ok", `echo hello from $HOSTNAME; echo done > /dev/termination-log`), metav1.CreateOptions{})
	require.NoError(t, err)
	waitJobCondition(t, ns, "ok", batchv1.JobComplete, 60*time.Second)

	pod := jobPod(t, ns, "ok")
	pod = waitPod(t, ns, pod.Name, 10*time.Second, "Succeeded", podPhase(corev1.PodSucceeded))
	term := terminated(pod, "main")
	require.NotNil(t, term)
	require.EqualValues(t, 0, term.ExitCode)
	require.Equal(t, "Completed", term.Reason)
	require.Equal(t, "done\n", term.Message)
	require.False(t, term.FinishedAt.Before(&term.StartedAt))
	require.Equal(t, "127.0.0.1", pod.Status.PodIP)
	for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized} {
		require.True(t, hasPodCondition(pod, ct, corev1.ConditionTrue), "condition %s", ct)
	}
	require.True(t, hasPodCondition(pod, corev1.PodReady, corev1.ConditionFalse))

	logs, err := shared.Client().CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	require.NoError(t, err)
	require.Equal(t, "hello from "+pod.Name+"\n", string(logs))
}

func TestNodeParallelJob(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	job := shJob("many", `echo $JOB_COMPLETION_INDEX`)
	job.Spec.Completions = ptr.To[int32](30)
	job.Spec.Parallelism = ptr.To[int32](10)
	job.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
	_, err := shared.Client().BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{})
	require.NoError(t, err)
	waitJobCondition(t, ns, "many", batchv1.JobComplete, 2*time.Minute)
	j, err := shared.Client().BatchV1().Jobs(ns).Get(context.Background(), "many", metav1.GetOptions{})
	require.NoError(t, err)
	require.EqualValues(t, 30, j.Status.Succeeded)
	require.EqualValues(t, 0, j.Status.Failed)
}

func hasPodCondition(p *corev1.Pod, t corev1.PodConditionType, s corev1.ConditionStatus) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status == s
		}
	}
	return false
}

func TestNodeJobFailsWithExitCode(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	_, err := shared.Client().BatchV1().Jobs(ns).Create(context.Background(), shJob("fail", `echo failing >&2; exit 3`), metav1.CreateOptions{})
	require.NoError(t, err)
	waitJobCondition(t, ns, "fail", batchv1.JobFailed, 60*time.Second)

	pod := waitPod(t, ns, jobPod(t, ns, "fail").Name, 10*time.Second, "Failed", podPhase(corev1.PodFailed))
	term := terminated(pod, "main")
	require.NotNil(t, term)
	require.EqualValues(t, 3, term.ExitCode)
	require.Equal(t, "Error", term.Reason)
}

func TestNodeTerminationMessageFallsBackToLogs(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := shPod("fallback", `echo line1; echo the reason; exit 1`)
	pod.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	createPod(t, ns, pod)
	p := waitPod(t, ns, "fallback", 30*time.Second, "Failed", podPhase(corev1.PodFailed))
	require.Equal(t, "line1\nthe reason\n", terminated(p, "main").Message)
}

func TestNodeJobActiveDeadline(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	job := shJob("slow", `sleep 600`)
	job.Spec.ActiveDeadlineSeconds = ptr.To[int64](2)
	_, err := shared.Client().BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{})
	require.NoError(t, err)
	cond := waitJobCondition(t, ns, "slow", batchv1.JobFailed, 60*time.Second)
	require.Equal(t, batchv1.JobReasonDeadlineExceeded, cond.Reason)
	// The Job controller deleted the pod; the node stopped it and removed it.
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := shared.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=slow"})
		return err == nil && len(pods.Items) == 0, nil
	})
	require.NoError(t, err, "the job's pod was not removed")
}

func TestNodePodActiveDeadline(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := shPod("deadline", `sleep 600`)
	pod.Spec.ActiveDeadlineSeconds = ptr.To[int64](1)
	createPod(t, ns, pod)
	p := waitPod(t, ns, "deadline", 30*time.Second, "Failed", podPhase(corev1.PodFailed))
	require.Equal(t, "DeadlineExceeded", p.Status.Reason)
}

func TestNodeDeletingJobSendsSIGTERM(t *testing.T) {
	t.Parallel()
	for _, policy := range []metav1.DeletionPropagation{metav1.DeletePropagationBackground, metav1.DeletePropagationForeground} {
		t.Run(string(policy), func(t *testing.T) {
			t.Parallel()
			ns := nodeNamespace(t)
			marker := filepath.Join(t.TempDir(), "sigterm")
			job := shJob("victim", "")
			job.Spec.Template.Spec.Containers[0].Command = []string{testBinary(t), marker}
			job.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: helperEnv, Value: "sigterm"}}
			_, err := shared.Client().BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{})
			require.NoError(t, err)
			pod := jobPod(t, ns, "victim")
			waitFile(t, marker+".ready", 60*time.Second)

			err = shared.Client().BatchV1().Jobs(ns).Delete(context.Background(), "victim", metav1.DeleteOptions{PropagationPolicy: &policy})
			require.NoError(t, err)
			got := waitFile(t, marker, 30*time.Second)
			require.Equal(t, "terminated", got)
			err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				_, err := shared.Client().CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			require.NoError(t, err, "pod was not deleted")
		})
	}
}

// waitFile waits for a file to have content and returns it.
func waitFile(t *testing.T, path string, timeout time.Duration) string {
	t.Helper()
	var data []byte
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		b, err := os.ReadFile(path)
		data = b
		return err == nil && len(b) > 0, nil
	})
	require.NoError(t, err, "file %s never appeared", path)
	return string(data)
}

// execPod starts a long-running pod with a volume, env and working dir for
// exec to observe.
func execPod(t *testing.T, ns string) string {
	t.Helper()
	pod := shPod("shell", `echo started; exec sleep 600`)
	pod.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	c := &pod.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{{Name: "work", MountPath: "/kubebox-test/work"}}
	c.WorkingDir = "/kubebox-test/work"
	c.Env = []corev1.EnvVar{{Name: "GREETING", Value: "hi"}}
	createPod(t, ns, pod)
	waitPod(t, ns, "shell", 30*time.Second, "Running", podPhase(corev1.PodRunning))
	return "shell"
}

func TestNodeExec(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := execPod(t, ns)
	cfg := shared.RESTConfig()
	req := shared.Client().CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: "main",
			Command:   []string{"sh", "-c", `echo "$(cat) $GREETING $(pwd) $(hostname)"; echo oops >&2; touch mark-` + ns + `; exit 7`},
			Stdin:     true, Stdout: true, Stderr: true,
		}, scheme.ParameterCodec)

	executors := map[string]func() (remotecommand.Executor, error){
		"spdy": func() (remotecommand.Executor, error) { return remotecommand.NewSPDYExecutor(cfg, "POST", req.URL()) },
		"websocket": func() (remotecommand.Executor, error) {
			return remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
		},
		"fallback": func() (remotecommand.Executor, error) {
			ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
			if err != nil {
				return nil, err
			}
			spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
			if err != nil {
				return nil, err
			}
			return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
				return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
			})
		},
	}
	for name, newExec := range executors {
		t.Run(name, func(t *testing.T) {
			ex, err := newExec()
			require.NoError(t, err)
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{
				Stdin: strings.NewReader("ping"), Stdout: &stdout, Stderr: &stderr,
			})
			var exitErr utilexec.CodeExitError
			require.True(t, errors.As(err, &exitErr), "want an exit code error, got %v", err)
			require.Equal(t, 7, exitErr.Code)
			require.Equal(t, "ping hi /kubebox-test/work shell\n", stdout.String())
			require.Equal(t, "oops\n", stderr.String())
		})
	}
	// The file landed in the pod's emptyDir, not in the host's directory.
	_, err := os.Stat("/kubebox-test/work/mark-" + ns)
	require.True(t, os.IsNotExist(err), "exec wrote to the host path: %v", err)
}

type fixedSize struct{ sent bool }

func (f *fixedSize) Next() *remotecommand.TerminalSize {
	if f.sent {
		return nil
	}
	f.sent = true
	return &remotecommand.TerminalSize{Width: 100, Height: 40}
}

func TestNodeExecTTY(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := execPod(t, ns)
	req := shared.Client().CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: "main",
			// Waits for the client's size to reach the terminal.
			Command: []string{"sh", "-c", `while [ "$(stty size)" = "0 0" ]; do sleep 0.05; done; read line; tty; stty size; echo "got $line"; exit 5`},
			Stdin:   true, Stdout: true, TTY: true,
		}, scheme.ParameterCodec)
	ex, err := remotecommand.NewWebSocketExecutor(shared.RESTConfig(), "GET", req.URL().String())
	require.NoError(t, err)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdinR, stdinW := io.Pipe()
	go func() { _, _ = stdinW.Write([]byte("hello\n")) }()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{
		Stdin: stdinR, Stdout: &out, Tty: true, TerminalSizeQueue: &fixedSize{},
	})
	stdinW.Close()
	var exitErr utilexec.CodeExitError
	require.True(t, errors.As(err, &exitErr), "want an exit code error, got %v (output %q)", err, out.String())
	require.Equal(t, 5, exitErr.Code)
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	require.Regexp(t, `(?s)hello\n/dev/pts/\d+\n40 100\ngot hello\n$`, got)
}

func TestNodeAttach(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := shPod("reader", `read line; echo "got $line"; echo bye >&2`)
	pod.Spec.Containers[0].Stdin = true
	pod.Spec.Containers[0].StdinOnce = true
	createPod(t, ns, pod)
	waitPod(t, ns, "reader", 30*time.Second, "Running", podPhase(corev1.PodRunning))

	req := shared.Client().CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name("reader").SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Container: "main", Stdin: true, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewWebSocketExecutor(shared.RESTConfig(), "GET", req.URL().String())
	require.NoError(t, err)
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("hello\n"), Stdout: &stdout, Stderr: &stderr})
	require.NoError(t, err)
	require.Equal(t, "got hello\n", stdout.String())
	require.Equal(t, "bye\n", stderr.String())
	waitPod(t, ns, "reader", 30*time.Second, "Succeeded", podPhase(corev1.PodSucceeded))
}

func TestNodeKubectlExecAndLogs(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := execPod(t, ns)
	cmd := kubectl(t, "-n", ns, "exec", "-i", pod, "--", "sh", "-c", "tr a-z A-Z; exit 4")
	cmd.Stdin = strings.NewReader("shout\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.Equal(t, "SHOUT\n", string(out))
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "kubectl exec: %v", err)
	require.Equal(t, 4, ee.ExitCode())
	require.Contains(t, stderr.String(), "command terminated with exit code 4")

	out, err = kubectl(t, "-n", ns, "logs", pod).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, "started\n", string(out))
}

func kubectl(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return exec.Command("kubectl", append([]string{"--kubeconfig", shared.KubeconfigPath()}, args...)...)
}

func TestNodeKubectlPortForward(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	portFile := filepath.Join(t.TempDir(), "port")
	pod := shPod("echo", "")
	pod.Spec.Containers[0].Command = []string{testBinary(t), portFile}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: helperEnv, Value: "echo"}}
	createPod(t, ns, pod)
	port := waitFile(t, portFile, 30*time.Second)

	cmd := kubectl(t, "-n", ns, "port-forward", "pod/echo", ":"+port)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make([]byte, 200)
	n, err := stdout.Read(line)
	require.NoError(t, err)
	m := regexp.MustCompile(`127\.0\.0\.1:(\d+) -> `).FindSubmatch(line[:n])
	require.NotNil(t, m, "unexpected port-forward output %q", line[:n])

	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+string(m[1]), 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Write([]byte("through the apiserver\n"))
	require.NoError(t, err)
	got := make([]byte, len("through the apiserver\n"))
	_, err = io.ReadFull(conn, got)
	require.NoError(t, err)
	require.Equal(t, "through the apiserver\n", string(got))
}

func TestNodeLogsFollow(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	gate := filepath.Join(t.TempDir(), "gate")
	createPod(t, ns, shPod("talker", fmt.Sprintf(
		`for i in 1 2 3; do echo line $i; done; while [ ! -e %s ]; do sleep 0.05; done; echo last`, gate)))
	waitPod(t, ns, "talker", 30*time.Second, "Running", podPhase(corev1.PodRunning))

	cmd := kubectl(t, "-n", ns, "logs", "-f", "talker")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	// The first lines arrive while the container still runs...
	buf := make([]byte, 0, 64)
	for !strings.Contains(string(buf), "line 3\n") {
		chunk := make([]byte, 64)
		n, err := stdout.Read(chunk)
		require.NoError(t, err, "log stream ended early: %q", buf)
		buf = append(buf, chunk[:n]...)
	}
	// ...and the stream ends once it exits, with what it wrote last.
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	rest, err := io.ReadAll(stdout)
	require.NoError(t, err)
	require.NoError(t, cmd.Wait())
	require.Equal(t, "line 1\nline 2\nline 3\nlast\n", string(buf)+string(rest))

	tail, err := shared.Client().CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{TailLines: ptr.To[int64](2)}).DoRaw(context.Background())
	require.NoError(t, err)
	require.Equal(t, "line 3\nlast\n", string(tail))

	out, err := kubectl(t, "-n", ns, "logs", "--timestamps", "--tail", "1", "talker").CombinedOutput()
	require.NoError(t, err, string(out))
	ts, line, _ := strings.Cut(string(out), " ")
	at, err := time.Parse(time.RFC3339Nano, ts)
	require.NoError(t, err, "timestamp of %q", out)
	require.WithinDuration(t, time.Now(), at, time.Minute)
	require.Equal(t, "last\n", line)

	after := metav1.NewTime(at.Add(time.Second))
	none, err := shared.Client().CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{SinceTime: &after}).DoRaw(context.Background())
	require.NoError(t, err)
	require.Empty(t, string(none))
}

func TestNodeImagePullBackOff(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := shPod("noimage", "true")
	pod.Spec.Containers[0].Image = "registry.example/no-such-image:v1"
	createPod(t, ns, pod)
	p := waitPod(t, ns, "noimage", 30*time.Second, "ImagePullBackOff", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == "ImagePullBackOff"
	})
	require.Equal(t, corev1.PodPending, p.Status.Phase)
	require.Contains(t, p.Status.ContainerStatuses[0].State.Waiting.Message, `Back-off pulling image "registry.example/no-such-image:v1"`)
}

func TestNodeOOMKilled(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("no cgroup v1 memory controller")
	}
	ns := nodeNamespace(t)
	pod := shPod("hog", `x=$(head -c 209715200 /dev/zero | tr '\0' a); echo survived ${#x}`)
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
	createPod(t, ns, pod)
	p := waitPod(t, ns, "hog", 60*time.Second, "Failed", podPhase(corev1.PodFailed))
	term := terminated(p, "main")
	require.NotNil(t, term)
	require.Equal(t, "OOMKilled", term.Reason)
	require.EqualValues(t, 137, term.ExitCode)
}

func TestNodeCPULimit(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"); err != nil {
		t.Skip("no cgroup v1 cpu controller")
	}
	ns := nodeNamespace(t)
	pod := shPod("capped", `cat /sys/fs/cgroup/cpu$(awk -F: '$2=="cpu" || $2~/^cpu,|,cpu$|,cpu,/ {print $3}' /proc/self/cgroup)/cpu.cfs_quota_us`)
	pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}
	createPod(t, ns, pod)
	waitPod(t, ns, "capped", 30*time.Second, "Succeeded", podPhase(corev1.PodSucceeded))
	logs, err := shared.Client().CoreV1().Pods(ns).GetLogs("capped", &corev1.PodLogOptions{}).DoRaw(context.Background())
	require.NoError(t, err)
	require.Equal(t, "25000\n", string(logs))
}

func TestNodeInClusterConfig(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	ctx := context.Background()
	client := shared.Client()
	_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "lister"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-lister"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "lister"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-lister"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "lister", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	run := func(name, sa string) *corev1.Pod {
		pod := shPod(name, "")
		pod.Spec.ServiceAccountName = sa
		pod.Spec.Containers[0].Command = []string{testBinary(t)}
		pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: helperEnv, Value: "incluster"}}
		createPod(t, ns, pod)
		return waitPod(t, ns, name, 60*time.Second, "finished", func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		})
	}
	allowed := run("allowed", "lister")
	logs, err := client.CoreV1().Pods(ns).GetLogs("allowed", &corev1.PodLogOptions{}).DoRaw(ctx)
	require.NoError(t, err)
	require.Equal(t, corev1.PodSucceeded, allowed.Status.Phase, string(logs))
	require.Contains(t, string(logs), "pod allowed\n")

	// The default service account may not list pods: the token is really
	// the pod's own, and RBAC applies to it.
	denied := run("denied", "")
	logs, err = client.CoreV1().Pods(ns).GetLogs("denied", &corev1.PodLogOptions{}).DoRaw(ctx)
	require.NoError(t, err)
	require.Equal(t, corev1.PodFailed, denied.Status.Phase)
	require.Contains(t, string(logs), "forbidden")
}

func TestNodeEnvVolumesAndInitContainers(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	ctx := context.Background()
	client := shared.Client()
	_, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		StringData: map[string]string{"token": "s3cret", "user": "bot"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data:       map[string]string{"mode": "fast", "config.yaml": "a: 1\n"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	hostDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(hostDir, "file"), []byte("from-host"), 0o644))
	pod := shPod("env", `
echo "secret=$TOKEN cm=$MODE name=$POD_NAME ns=$POD_NS node=$NODE sa=$SA label=$APP ip=$IP uid_set=${UID_:+yes}"
echo "from=$P_user expanded=$EXPANDED host=$KUBERNETES_SERVICE_HOST port_set=${KUBERNETES_SERVICE_PORT:+yes}"
echo "files=$(cat /etc/creds/token) $(cat /etc/settings/config.yaml) init=$(cat /shared/init)"
echo "wd=$(pwd) host=$(cat /host/file) labels=$(cat /podinfo/labels)"
echo "hostname=$(cat /etc/hostname) hosts=$(grep -c "127.0.0.1.env$" /etc/hosts)"`)
	pod.Labels = map[string]string{"app": "envtest"}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}},
		{Name: "settings", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
		{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
		{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
		}}},
	}
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "first", Image: "sh", Command: []string{"sh", "-c", "echo -n one > /shared/init"},
			VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}},
		{Name: "second", Image: "sh", Command: []string{"sh", "-c", "echo -n \"$(cat /shared/init)+two\" > /shared/init"},
			VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}},
	}
	c := &pod.Spec.Containers[0]
	c.WorkingDir = "/kubebox-test/wd"
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "creds", MountPath: "/etc/creds"},
		{Name: "settings", MountPath: "/etc/settings"},
		{Name: "shared", MountPath: "/shared"},
		{Name: "host", MountPath: "/host"},
		{Name: "podinfo", MountPath: "/podinfo"},
	}
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	c.EnvFrom = []corev1.EnvFromSource{{Prefix: "P_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}}}
	c.Env = []corev1.EnvVar{
		{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "token"}}},
		{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "mode"}}},
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "POD_NS", ValueFrom: field("metadata.namespace")},
		{Name: "UID_", ValueFrom: field("metadata.uid")},
		{Name: "NODE", ValueFrom: field("spec.nodeName")},
		{Name: "SA", ValueFrom: field("spec.serviceAccountName")},
		{Name: "APP", ValueFrom: field("metadata.labels['app']")},
		{Name: "IP", ValueFrom: field("status.podIP")},
		{Name: "EXPANDED", Value: "$(MODE)-$(POD_NAME)-$$(MODE)"},
	}
	createPod(t, ns, pod)
	p := waitPod(t, ns, "env", 60*time.Second, "Succeeded", podPhase(corev1.PodSucceeded))
	require.Len(t, p.Status.InitContainerStatuses, 2)
	first, second := terminated(p, "first"), terminated(p, "second")
	require.NotNil(t, first)
	require.NotNil(t, second)
	require.False(t, second.StartedAt.Before(&first.FinishedAt), "init containers overlapped")

	logs, err := client.CoreV1().Pods(ns).GetLogs("env", &corev1.PodLogOptions{}).DoRaw(ctx)
	require.NoError(t, err)
	want := fmt.Sprintf(`secret=s3cret cm=fast name=env ns=%s node=%s sa=default label=envtest ip=127.0.0.1 uid_set=yes
from=bot expanded=fast-env-$(MODE) host=127.0.0.1 port_set=yes
files=s3cret a: 1 init=one+two
wd=/kubebox-test/wd host=from-host labels=app="envtest"
hostname=env hosts=1
`, ns, shared.NodeName())
	require.Equal(t, want, string(logs))
}

// A working directory that is not on the host is the container's own, as in
// a fresh root filesystem: two pods do not see each other's files there.
func TestNodePrivateWorkingDir(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	wd := "/kubebox-test/private-" + ns
	gate := filepath.Join(t.TempDir(), "gate")
	for _, name := range []string{"a", "b"} {
		pod := shPod(name, fmt.Sprintf(`echo $HOSTNAME > owner-$HOSTNAME; while [ ! -e %s ]; do sleep 0.05; done; ls`, gate))
		pod.Spec.Containers[0].WorkingDir = wd
		createPod(t, ns, pod)
	}
	for _, name := range []string{"a", "b"} {
		waitPod(t, ns, name, 30*time.Second, "Running", podPhase(corev1.PodRunning))
	}
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	for _, name := range []string{"a", "b"} {
		waitPod(t, ns, name, 30*time.Second, "Succeeded", podPhase(corev1.PodSucceeded))
		logs, err := shared.Client().CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(context.Background())
		require.NoError(t, err)
		require.Equal(t, "owner-"+name+"\n", string(logs))
	}
	entries, err := os.ReadDir(wd)
	require.NoError(t, err)
	require.Empty(t, entries, "files leaked to the host's %s", wd)
	_ = os.Remove(wd)
}

func TestNodeSidecar(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	dir := t.TempDir()
	pod := shPod("with-sidecar", fmt.Sprintf(`cat %s/sidecar-up`, dir))
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "sidecar", Image: "sh", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Command: []string{"sh", "-c", fmt.Sprintf(`echo up > %s/sidecar-up; exec sleep 600`, dir)},
		// The main container starts only once this passes.
		StartupProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", dir + "/sidecar-up"}}},
			PeriodSeconds: 1,
		},
	}}
	createPod(t, ns, pod)
	p := waitPod(t, ns, "with-sidecar", 30*time.Second, "Succeeded", podPhase(corev1.PodSucceeded))
	require.EqualValues(t, 0, terminated(p, "main").ExitCode)
	logs, err := shared.Client().CoreV1().Pods(ns).GetLogs("with-sidecar", &corev1.PodLogOptions{Container: "main"}).DoRaw(context.Background())
	require.NoError(t, err)
	require.Equal(t, "up\n", string(logs))
	// The sidecar was stopped when the pod finished.
	p = waitPod(t, ns, "with-sidecar", 30*time.Second, "sidecar stopped", func(p *corev1.Pod) bool { return terminated(p, "sidecar") != nil })
	require.Equal(t, corev1.PodSucceeded, p.Status.Phase)
}

func TestNodeRestartPolicyOnFailure(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	// Fails on the first run, succeeds on the second (the emptyDir survives
	// container restarts).
	pod := shPod("flaky", `if [ -e /state/ran ]; then echo second; exit 0; fi; touch /state/ran; echo first; exit 1`)
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	pod.Spec.Volumes = []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "state", MountPath: "/state"}}
	createPod(t, ns, pod)
	p := waitPod(t, ns, "flaky", 60*time.Second, "Succeeded", podPhase(corev1.PodSucceeded))
	cs := p.Status.ContainerStatuses[0]
	require.EqualValues(t, 1, cs.RestartCount)
	require.NotNil(t, cs.LastTerminationState.Terminated)
	require.EqualValues(t, 1, cs.LastTerminationState.Terminated.ExitCode)

	prev, err := shared.Client().CoreV1().Pods(ns).GetLogs("flaky", &corev1.PodLogOptions{Previous: true}).DoRaw(context.Background())
	require.NoError(t, err)
	require.Equal(t, "first\n", string(prev))
}

func TestNodeCrashLoopBackOff(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	pod := shPod("crasher", `echo crashing; exit 1`)
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	createPod(t, ns, pod)
	p := waitPod(t, ns, "crasher", 30*time.Second, "CrashLoopBackOff", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == "CrashLoopBackOff"
	})
	cs := p.Status.ContainerStatuses[0]
	require.GreaterOrEqual(t, cs.RestartCount, int32(1))
	require.NotNil(t, cs.LastTerminationState.Terminated)
	require.EqualValues(t, 1, cs.LastTerminationState.Terminated.ExitCode)
	require.Equal(t, corev1.PodRunning, p.Status.Phase)
	require.Contains(t, cs.State.Waiting.Message, "back-off 10s restarting failed container=main")
}

func TestNodeProbes(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	flag := filepath.Join(t.TempDir(), "ready")
	gated := shPod("gated", "exec sleep 600")
	gated.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", flag}}},
		PeriodSeconds: 1,
	}
	createPod(t, ns, gated)
	p := waitPod(t, ns, "gated", 30*time.Second, "Running", podPhase(corev1.PodRunning))
	require.False(t, hasPodCondition(p, corev1.PodReady, corev1.ConditionTrue), "ready before its probe passed")
	require.NoError(t, os.WriteFile(flag, nil, 0o644))
	waitPod(t, ns, "gated", 30*time.Second, "Ready", func(p *corev1.Pod) bool {
		return hasPodCondition(p, corev1.PodReady, corev1.ConditionTrue)
	})

	unhealthy := shPod("unhealthy", "exec sleep 600")
	unhealthy.Spec.RestartPolicy = corev1.RestartPolicyAlways
	unhealthy.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
	unhealthy.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(freeTCPPort(t)))}},
		PeriodSeconds:    1,
		FailureThreshold: 2,
	}
	createPod(t, ns, unhealthy)
	p = waitPod(t, ns, "unhealthy", 30*time.Second, "a restart", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	require.NotNil(t, last)
	require.EqualValues(t, 128+int32(syscall.SIGTERM), last.ExitCode)
}

func TestNodeLifecycleHooks(t *testing.T) {
	t.Parallel()
	ns := nodeNamespace(t)
	trace := filepath.Join(t.TempDir(), "trace")
	pod := shPod("hooked", fmt.Sprintf(`trap 'echo term >> %[1]s; exit 0' TERM; echo main >> %[1]s; while :; do sleep 0.1; done`, trace))
	pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo poststart >> " + trace}}},
		PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo prestop >> " + trace}}},
	}
	createPod(t, ns, pod)
	waitPod(t, ns, "hooked", 30*time.Second, "Ready", func(p *corev1.Pod) bool {
		return hasPodCondition(p, corev1.PodReady, corev1.ConditionTrue)
	})
	require.NoError(t, shared.Client().CoreV1().Pods(ns).Delete(context.Background(), "hooked", metav1.DeleteOptions{}))
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := shared.Client().CoreV1().Pods(ns).Get(ctx, "hooked", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	require.NoError(t, err, "pod was not deleted")
	b, err := os.ReadFile(trace)
	require.NoError(t, err)
	lines := strings.Fields(string(b))
	// postStart runs alongside the main process; preStop strictly before SIGTERM.
	require.ElementsMatch(t, []string{"main", "poststart", "prestop", "term"}, lines)
	require.Equal(t, []string{"prestop", "term"}, lines[2:])
}

// TestNodeRunStopsCleanly runs a second node in the shared cluster, gives it
// a pod, and stops it: Run must return, kill the pod's processes and leave
// no goroutines behind. (Not parallel: it counts goroutines.)
func TestNodeRunStopsCleanly(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ns := nodeNamespace(t)
	name := "second-" + strings.ToLower(strconv.FormatInt(time.Now().UnixNano(), 36))
	certPEM, keyPEM := selfSignedCert(t)
	cfg := shared.RESTConfig()
	cfg.QPS, cfg.Burst = 100, 200
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dir := t.TempDir()
	n, err := node.New(node.Config{
		Client: client, Name: name, Dir: dir,
		Images:        map[string]string{"sh": "/bin/sh"},
		APIServerHost: "127.0.0.1", APIServerPort: 6443,
		KubeletPort: freeTCPPort(t), ServingCert: certPEM, ServingKey: keyPEM,
		// No room for pods: the scheduler keeps other tests' pods off this
		// node; this test binds its pod itself.
		Capacity: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = shared.Client().CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	pidFile := filepath.Join(t.TempDir(), "pid")
	// "$$" in a command is Kubernetes' escaped "$": the shell sees "echo $$".
	pod := shPod("sleeper", fmt.Sprintf(`echo $$$$ > %s; exec sleep 600`, pidFile))
	pod.Spec.NodeName = name
	createPod(t, ns, pod)
	waitPod(t, ns, "sleeper", 30*time.Second, "Running", podPhase(corev1.PodRunning))
	pid, err := strconv.Atoi(strings.TrimSpace(waitFile(t, pidFile, 30*time.Second)))
	require.NoError(t, err)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
		done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the container process survived the node")
	client.CoreV1().RESTClient().(*rest.RESTClient).Client.CloseIdleConnections()
	require.NoError(t, goleak.Find(ignore, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop")))
}

func selfSignedCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kubebox-test-node"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestNodePodThroughput starts a batch of pods at once and reports how many
// the node started per second (reported, not asserted).
func TestNodePodThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput run skipped in -short mode")
	}
	ns := nodeNamespace(t)
	const count = 100
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i := range count {
		wg.Go(func() {
			pod := shPod(fmt.Sprintf("burst-%d", i), "exec sleep 600")
			_, err := shared.Client().CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	created := time.Since(start)
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := shared.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == count, nil
	})
	require.NoError(t, err)
	elapsed := time.Since(start)
	t.Logf("%d pods Running in %s (created in %s): %.1f pods/s", count, elapsed.Round(time.Millisecond), created.Round(time.Millisecond), float64(count)/elapsed.Seconds())
	// Free the node for the other tests.
	require.NoError(t, shared.Client().CoreV1().Pods(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}))
}
