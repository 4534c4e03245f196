// Command kubebox runs a kubebox cluster in the foreground for people, the
// demo and other programs' tests.
//
//	kubebox up --dir D [--image NAME=PATH ...] [--node-name N] [--bin-dir B]
//	kubebox down --dir D [--timeout 60s]
//
// up writes D/kubeconfig (admin), D/pid, and creates D/ready once the Node is
// Ready; on SIGTERM or SIGINT it stops the cluster, removes D/ready and
// D/pid, and exits 0. down signals the pid in D/pid with SIGTERM and waits
// for it to exit (SIGKILL after the timeout; the children die with it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kilnbuild/kiln/tests/kubebox"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubebox:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  kubebox up --dir D [--image NAME=PATH ...] [--node-name N] [--bin-dir B]
  kubebox down --dir D [--timeout 60s]`)
	os.Exit(2)
}

// images collects repeated --image NAME=PATH flags.
type images map[string]string

func (m images) String() string { return fmt.Sprint(map[string]string(m)) }

func (m images) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("want NAME=PATH, got %q", v)
	}
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		path = abs
	}
	m[name] = path
	return nil
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (required); gets kubeconfig, pid, ready, logs/")
	imgs := images{}
	fs.Var(imgs, "image", "NAME=PATH: run PATH for containers of image NAME (repeatable)")
	nodeName := fs.String("node-name", "", "Node name (default kubebox-node)")
	binDir := fs.String("bin-dir", "", "control-plane binaries (default $KUBEBOX_BIN_DIR or .kubebox/bin/"+kubebox.Version+" above the working dir, or next to this program)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for a Ready node")
	capacity := fs.String("capacity", "", "NAME=QUANTITY,...: what the Node reports instead of the machine's CPUs, memory and 110 pods (e.g. cpu=64,memory=256Gi,pods=1200)")
	fs.Parse(args)
	nodeCapacity, err := parseCapacity(*capacity)
	if err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("up: --dir is required")
	}
	if *binDir == "" && os.Getenv("KUBEBOX_BIN_DIR") == "" {
		// `make kubebox-build` puts this program next to the binaries.
		if exe, err := os.Executable(); err == nil {
			if _, err := os.Stat(filepath.Join(filepath.Dir(exe), "kube-apiserver")); err == nil {
				*binDir = filepath.Dir(exe)
			}
		}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	ready := filepath.Join(*dir, "ready")
	pidFile := filepath.Join(*dir, "pid")
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && alive(pid) {
			return fmt.Errorf("up: a cluster (pid %d) already runs in %s; run kubebox down --dir %s", pid, *dir, *dir)
		}
	}
	os.Remove(ready)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	start := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, *timeout)
	cluster, err := kubebox.Start(startCtx, kubebox.Options{
		Dir: *dir, BinDir: *binDir, Images: imgs, NodeName: *nodeName, NodeCapacity: nodeCapacity,
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return err
	}
	defer cluster.Stop()
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		return err
	}
	defer os.Remove(ready)
	fmt.Printf("kubebox: ready in %s; export KUBECONFIG=%s\n",
		time.Since(start).Round(100*time.Millisecond), cluster.KubeconfigPath())
	<-ctx.Done()
	fmt.Println("kubebox: stopping")
	return nil
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory given to up (required)")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait before SIGKILL")
	fs.Parse(args)
	if *dir == "" {
		return errors.New("down: --dir is required")
	}
	b, err := os.ReadFile(filepath.Join(*dir, "pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // not running
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("down: bad pid file %s", filepath.Join(*dir, "pid"))
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			os.Remove(filepath.Join(*dir, "pid"))
			os.Remove(filepath.Join(*dir, "ready"))
			return nil // stale pid file
		}
		return fmt.Errorf("down: signalling %d: %w", pid, err)
	}
	deadline := time.Now().Add(*timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond)
			os.Remove(filepath.Join(*dir, "pid"))
			os.Remove(filepath.Join(*dir, "ready"))
			return fmt.Errorf("down: %d did not stop within %s; killed", pid, *timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// alive reports whether pid still runs (a zombie counts as gone).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3, after the parenthesized command name, is the state.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// parseCapacity reads --capacity: comma-separated NAME=QUANTITY pairs of
// the resources cpu, memory and pods (nil when empty). Resources not named
// keep kubebox's defaults.
func parseCapacity(s string) (corev1.ResourceList, error) {
	if s == "" {
		return nil, nil
	}
	out := corev1.ResourceList{}
	for kv := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(kv, "=")
		switch corev1.ResourceName(name) {
		case corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods:
		default:
			return nil, fmt.Errorf("up: --capacity %q: resource %q is not cpu, memory or pods", s, name)
		}
		q, err := resource.ParseQuantity(val)
		if !ok || err != nil {
			return nil, fmt.Errorf("up: --capacity %q: %q is not NAME=QUANTITY (e.g. pods=1200)", s, kv)
		}
		out[corev1.ResourceName(name)] = q
	}
	return out, nil
}
