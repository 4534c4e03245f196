// Package kbtest starts a kubebox cluster (tests/kubebox) for the product's
// tests through its CLI, since the product module does not import kubebox's.
// The binary is built by `make kubebox-build`; $KUBEBOX_BIN_DIR or
// .kubebox/bin/v1.37.2 (found walking up from the working dir) holds it.
// For tests only.
package kbtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kilnbuild/kiln/tests/childproc"
)

// Version is the kubebox version the product is tested against.
const Version = "v1.37.2"

// Cluster is a running kubebox.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Config     *rest.Config // admin
	Client     kubernetes.Interface
}

// BinDir finds kubebox's binaries.
func BinDir() (string, error) {
	if d := os.Getenv("KUBEBOX_BIN_DIR"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		cand := filepath.Join(d, ".kubebox", "bin", Version)
		if _, err := os.Stat(filepath.Join(cand, "kubebox")); err == nil {
			return cand, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("kubebox binaries not found above %s; run `make kubebox-build`", wd)
		}
	}
}

// HostTempDir is where host-side files that pods must see live. Not /tmp:
// build pods mount an emptyDir over /tmp, which hides whatever a container's
// mounts or executable would need from the host's /tmp. $KUBEBOX_HOST_TMP or
// /var/tmp.
func HostTempDir() string {
	if d := os.Getenv("KUBEBOX_HOST_TMP"); d != "" {
		return d
	}
	return "/var/tmp"
}

// Start runs `kubebox up` with the given image map and stops it when the test ends.
func Start(t testing.TB, images map[string]string) *Cluster {
	t.Helper()
	c, stop, err := Up(images)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(!t.Failed()) })
	return c
}

// Up runs `kubebox up` (for TestMain); stop(clean) ends it and, when clean,
// removes its state directory.
func Up(images map[string]string) (*Cluster, func(clean bool), error) {
	return UpWith(Options{Images: images})
}

// Options configures UpWith.
type Options struct {
	Images map[string]string // image name → executable its containers run
	// Capacity, when set, is what the Node reports instead of the machine's
	// CPUs, memory and 110 pods, as `kubebox up --capacity` takes it
	// ("cpu=64,memory=256Gi,pods=1200"): benches that hold hundreds of
	// build pods at once (each requests 50m CPU) need more than 2 CPUs' worth.
	Capacity string
}

// UpWith is Up with options.
func UpWith(o Options) (*Cluster, func(clean bool), error) {
	images := o.Images
	bin, err := BinDir()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp(HostTempDir(), "kbtest-")
	if err != nil {
		return nil, nil, err
	}
	args := []string{"up", "--dir", dir}
	if o.Capacity != "" {
		args = append(args, "--capacity", o.Capacity)
	}
	names := make([]string, 0, len(images))
	for n := range images {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		args = append(args, "--image", n+"="+images[n])
	}
	log, err := os.Create(filepath.Join(dir, "kubebox.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "kubebox"), args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := childproc.Start(cmd); err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func(clean bool) {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
		if clean {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "kbtest: kubebox state kept in %s\n", dir)
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "kubebox.log"))
			return nil, nil, fmt.Errorf("kubebox up exited (%v):\n%s", err, tail(b))
		default:
		}
		if time.Now().After(deadline) {
			stop(false)
			return nil, nil, fmt.Errorf("kubebox did not become ready; see %s", dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	kc := filepath.Join(dir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		stop(false)
		return nil, nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		stop(false)
		return nil, nil, err
	}
	return &Cluster{Dir: dir, Kubeconfig: kc, Config: cfg, Client: client}, stop, nil
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Impersonate returns a config acting as a service account, for least-privilege tests.
func (c *Cluster) Impersonate(namespace, serviceAccount string) *rest.Config {
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":" + serviceAccount,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}}
	return cfg
}

// WaitFor polls cond until it is true or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// SleeperPod starts a cluster whose image "sleeper" is /bin/sleep and a
// running pod in namespace default named name, with labels, whose container
// "main" sleeps forever: a stand-in for a project's long-lived pod. The
// test's TMPDIR moves under HostTempDir, so its t.TempDir folders are
// visible to the pod's processes. It returns the cluster and that folder.
func SleeperPod(t testing.TB, name string, labels map[string]string) (*Cluster, string) {
	t.Helper()
	tmp, err := os.MkdirTemp(HostTempDir(), "kbtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	t.Cleanup(func() { os.RemoveAll(tmp) })
	c := Start(t, map[string]string{"sleeper": "/bin/sleep"})
	_, err = c.Client.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "sleeper", Args: []string{"infinity"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s: %v", name, err)
	}
	return c, tmp
}
