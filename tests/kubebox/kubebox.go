package kubebox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Version is the Kubernetes release kubebox builds and runs.
const Version = "v1.37.2"

// Options configure a cluster. The zero value is a working configuration.
type Options struct {
	// Dir holds the cluster's state: pki/, etcd/, logs/, node/ and the admin
	// kubeconfig. Default: a new temporary directory, removed by Stop. When
	// set, Start first removes what an earlier cluster left there (only the
	// names above), and Stop leaves the directory in place.
	Dir string

	// BinDir holds etcd, kube-apiserver, kube-controller-manager and
	// kube-scheduler. Default: $KUBEBOX_BIN_DIR, else the first
	// .kubebox/bin/v1.37.2 found walking up from the working directory
	// (`make kubebox-build` puts them there).
	BinDir string

	// Images maps a container image name to the host executable that the
	// node runs for it. Pods with other images end in ImagePullBackOff.
	Images map[string]string

	// NodeName is the name of the one Node. Default "kubebox-node".
	NodeName string

	// NodeCapacity overrides the capacity the Node reports. Default: the
	// machine's CPUs and memory, and 110 pods.
	NodeCapacity corev1.ResourceList

	// Log receives the output of every child process, each line prefixed
	// with the child's name, and the node's log. Default: one file per child
	// in Dir/logs (etcd.log, kube-apiserver.log, ..., node.log).
	Log io.Writer

	// StartTimeout bounds Start when ctx has no earlier deadline.
	// Default 2 minutes.
	StartTimeout time.Duration

	// APIServerArgs, ControllerManagerArgs and SchedulerArgs are appended to
	// the flags kubebox passes to each component (later flags win).
	APIServerArgs, ControllerManagerArgs, SchedulerArgs []string
}

// Cluster is a running control plane with one process-backed node.
type Cluster struct {
	dir       string
	removeDir bool
	bin       string
	logDir    string
	log       io.Writer // nil: files in logDir
	nodeName  string

	pki        *clusterPKI
	apiPort    int
	kubeconfig string
	restConfig *rest.Config
	client     kubernetes.Interface

	mu       sync.Mutex
	procs    []*process // in start order; stopped in reverse
	nodeStop context.CancelFunc
	nodeDone chan struct{} // closed when the node's Run returned
	nodeErr  error         // what Run returned; read after nodeDone
	closers  []io.Closer
	stopped  bool
	stopOnce sync.Once
}

// Start runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler
// and the process node, each on free ports of 127.0.0.1. It returns once the
// Node is Ready and schedulable and the "default" ServiceAccount exists in
// the "default" namespace. ctx bounds only the start; the cluster runs until
// Stop. On error nothing is left running.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts.NodeName = cmp.Or(opts.NodeName, "kubebox-node")
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	bin, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	c := &Cluster{bin: bin, nodeName: opts.NodeName}
	if opts.Log != nil {
		c.log = &lockedWriter{w: opts.Log}
	}
	if err := c.boot(ctx, opts); err != nil {
		// Keep the logs of a failed start for debugging, drop the rest.
		keepLogs := c.removeDir
		c.removeDir = false
		c.Stop()
		if keepLogs {
			for _, name := range stateNames {
				if name != "logs" {
					os.RemoveAll(filepath.Join(c.dir, name))
				}
			}
			err = fmt.Errorf("%w (logs kept in %s)", err, c.logDir)
		}
		return nil, err
	}
	return c, nil
}

func (c *Cluster) boot(ctx context.Context, opts Options) error {
	var err error
	if err := c.prepareDir(opts.Dir); err != nil {
		return err
	}
	if c.pki, err = newClusterPKI(filepath.Join(c.dir, "pki"), opts.NodeName); err != nil {
		return err
	}
	if err := c.startEtcdAndAPIServer(ctx, opts.APIServerArgs); err != nil {
		return err
	}
	if err := c.startControllers(opts); err != nil {
		return err
	}
	if err := c.startNode(opts); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		err := c.waitReady(ctx)
		if err == nil {
			return nil
		}
		// Another cluster took the kubelet port between probe and bind.
		if !errors.Is(err, errNodeStopped) || !addrInUse(c.nodeErr) || attempt == 3 {
			return err
		}
		if err := c.startNode(opts); err != nil {
			return err
		}
	}
}

// RESTConfig returns a new admin (system:masters) client configuration. It
// allows 100 requests per second (burst 200) so tests are not throttled.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// KubeconfigPath is the admin kubeconfig file, Dir/kubeconfig.
func (c *Cluster) KubeconfigPath() string { return c.kubeconfig }

// Client returns an admin clientset built from RESTConfig.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Dir is the cluster's state directory.
func (c *Cluster) Dir() string { return c.dir }

// Host is the apiserver URL, https://127.0.0.1:<port>.
func (c *Cluster) Host() string { return c.restConfig.Host }

// CACert is the PEM certificate of the cluster CA, which signed the
// apiserver's serving certificate.
func (c *Cluster) CACert() []byte { return c.pki.ca.Cert }

// NodeName is the name of the cluster's only Node.
func (c *Cluster) NodeName() string { return c.nodeName }

// Stop stops the node (which kills its containers), then the controllers,
// kube-apiserver and etcd, and removes Dir when Start created it. It is safe
// to call more than once and from several goroutines.
func (c *Cluster) Stop() {
	if c == nil {
		return
	}
	c.stopOnce.Do(c.stop)
}

func (c *Cluster) stop() {
	c.mu.Lock()
	c.stopped = true
	nodeStop, nodeDone, procs, closers := c.nodeStop, c.nodeDone, c.procs, c.closers
	c.mu.Unlock()

	if nodeStop != nil {
		nodeStop()
		select {
		case <-nodeDone:
		case <-time.After(30 * time.Second):
		}
	}
	// Controllers first (they only talk to the apiserver), then the
	// apiserver, then etcd. The cluster is throw-away: a short grace suffices.
	var wg sync.WaitGroup
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if p.name == "etcd" || p.name == "kube-apiserver" {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(2 * time.Second) }()
	}
	wg.Wait()
	for _, name := range []string{"kube-apiserver", "etcd"} {
		for _, p := range procs {
			if p.name == name {
				p.stop(3 * time.Second)
			}
		}
	}
	for _, cl := range closers {
		cl.Close()
	}
	if c.removeDir && c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// track records a started child so Stop ends it, unless Stop already ran.
func (c *Cluster) track(p *process) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		p.stop(0)
		return errStopped
	}
	c.procs = append(c.procs, p)
	return nil
}

func (c *Cluster) start(name string, args []string) (*process, error) {
	p, err := startProcess(name, filepath.Join(c.bin, name), args, c.logDir, c.log)
	if err != nil {
		return nil, err
	}
	return p, c.track(p)
}

// prepareDir creates the state directory, or clears what an earlier
// cluster left in the given one.
func (c *Cluster) prepareDir(dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "kubebox-")
		if err != nil {
			return fmt.Errorf("creating state dir: %w", err)
		}
		c.dir, c.removeDir = d, true
	} else {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("state dir %q: %w", dir, err)
		}
		c.dir = abs
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return fmt.Errorf("creating state dir: %w", err)
		}
		for _, name := range stateNames {
			if err := os.RemoveAll(filepath.Join(abs, name)); err != nil {
				return fmt.Errorf("clearing state dir: %w", err)
			}
		}
	}
	c.logDir = filepath.Join(c.dir, "logs")
	c.kubeconfig = filepath.Join(c.dir, "kubeconfig")
	for _, sub := range []string{"pki", "etcd", "logs", "node", "config"} {
		if err := os.MkdirAll(filepath.Join(c.dir, sub), 0o700); err != nil {
			return fmt.Errorf("creating state dir: %w", err)
		}
	}
	return nil
}

// stateNames are the entries of Dir that a cluster owns.
var stateNames = []string{"pki", "etcd", "logs", "node", "config", "kubeconfig"}

// findBinDir resolves Options.BinDir and checks the binaries are there.
func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("KUBEBOX_BIN_DIR")
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for d := wd; ; d = filepath.Dir(d) {
			cand := filepath.Join(d, ".kubebox", "bin", Version)
			if _, err := os.Stat(filepath.Join(cand, "kube-apiserver")); err == nil {
				dir = cand
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if dir == "" {
		return "", errors.New("kubebox: control-plane binaries not found: run `make kubebox-build` " +
			"(or tests/kubebox/build.sh), or set KUBEBOX_BIN_DIR")
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("kubebox: %s missing in %s: run `make kubebox-build`", name, dir)
		}
	}
	return filepath.Abs(dir)
}

// logFile opens Dir/logs/<name>.log, or a line-prefixing writer on
// Options.Log, for an in-process component.
func (c *Cluster) logWriter(name string) (io.Writer, error) {
	if c.log != nil {
		return &prefixWriter{prefix: "[" + name + "] ", w: c.log}, nil
	}
	f, err := os.OpenFile(filepath.Join(c.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.closers = append(c.closers, f)
	c.mu.Unlock()
	return f, nil
}

func (c *Cluster) nodeLogger() (*slog.Logger, error) {
	w, err := c.logWriter("node")
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), nil
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
