package node

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

// KubeletVersion is the version the node reports.
const KubeletVersion = "v1.37.2"

const (
	leaseNamespace      = "kube-node-lease"
	leaseDuration       = 40 * time.Second
	leaseRenewInterval  = 10 * time.Second
	nodeStatusInterval  = time.Minute
	podIP               = "127.0.0.1"
	statusWorkers       = 4
	defaultMaxPods      = 110
	shutdownGracePeriod = 10 * time.Second
)

// Config configures a Node.
type Config struct {
	// Client is an admin client of the cluster. Required. Give it a high
	// QPS (the node writes several objects per pod).
	Client kubernetes.Interface
	// Name is the Node's name. Default "kubebox".
	Name string
	// Images maps an image reference to the host executable that is its
	// entrypoint. A reference also matches without its tag or digest. A
	// container command is resolved on the host, except that a path that
	// does not exist on the host and ends in the executable's base name
	// (/usr/local/bin/runner for an image mapped to /tmp/x/runner) runs it.
	Images map[string]string
	// Dir holds the node's state: pod volumes, logs, termination messages.
	// Required.
	Dir string
	// APIServerHost and APIServerPort are injected into containers as
	// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT. Required.
	APIServerHost string
	APIServerPort int
	// CACert is the cluster CA (PEM), used as ca.crt in service-account
	// volumes until the kube-root-ca.crt ConfigMap of a namespace exists.
	CACert []byte
	// KubeletPort is the HTTPS port of the kubelet API on 127.0.0.1. Required.
	KubeletPort int
	// ServingCert and ServingKey (PEM) are the kubelet server's certificate. Required.
	ServingCert, ServingKey []byte
	// ClientCA (PEM) verifies the apiserver's kubelet client certificate.
	// Nil accepts any client.
	ClientCA []byte
	// Capacity overrides the reported capacity (defaults: the machine's CPUs
	// and memory, 110 pods).
	Capacity corev1.ResourceList
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// Node is a running process kubelet.
type Node struct {
	cfg     Config
	client  kubernetes.Interface
	log     *slog.Logger
	cgroups *cgroupRoot // memory
	cpu     *cgroupRoot
	tls     *tls.Config
	starter *nsinit.Starter

	recorder   record.EventRecorder
	pods       corelisters.PodLister
	configMaps corelisters.ConfigMapLister
	secrets    corelisters.SecretLister
	status     *statusManager

	mu      sync.Mutex
	ctx     context.Context
	workers map[types.UID]*podWorker
	wg      sync.WaitGroup
}

// New validates cfg and returns a Node; Run starts it.
func New(cfg Config) (*Node, error) {
	cfg.Name = cmp.Or(cfg.Name, "kubebox")
	cfg.Log = cmp.Or(cfg.Log, slog.Default())
	switch {
	case cfg.Client == nil:
		return nil, errors.New("node: Client is required")
	case cfg.Dir == "":
		return nil, errors.New("node: Dir is required")
	case cfg.APIServerHost == "" || cfg.APIServerPort == 0:
		return nil, errors.New("node: APIServerHost and APIServerPort are required")
	case cfg.KubeletPort == 0:
		return nil, errors.New("node: KubeletPort is required")
	}
	cert, err := tls.X509KeyPair(cfg.ServingCert, cfg.ServingKey)
	if err != nil {
		return nil, fmt.Errorf("node: loading serving certificate: %w", err)
	}
	tlsConfig := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequestClientCert,
	}
	if cfg.ClientCA != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.ClientCA) {
			return nil, errors.New("node: ClientCA holds no PEM certificate")
		}
		tlsConfig.ClientCAs = pool
		tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if err := os.MkdirAll(filepath.Join(dir, "pods"), 0o755); err != nil {
		return nil, fmt.Errorf("node: creating state dir: %w", err)
	}
	log := cfg.Log.With("component", "kubebox-node", "node", cfg.Name)
	n := &Node{
		cfg:     cfg,
		client:  cfg.Client,
		log:     log,
		tls:     tlsConfig,
		workers: map[types.UID]*podWorker{},
	}
	n.cgroups = newCgroupRoot(log, "memory")
	n.cpu = newCgroupRoot(log, "cpu")
	n.status = newStatusManager(n)
	return n, nil
}

// Run registers the Node, serves the kubelet API and runs the pods bound to
// the node until ctx is done; then it kills every container and returns.
func (n *Node) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(n.cfg.KubeletPort)))
	if err != nil {
		return fmt.Errorf("node: listening on kubelet port: %w", err)
	}
	srv := &http.Server{
		Handler:           n.handler(),
		TLSConfig:         n.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	node, err := n.register(ctx)
	if err != nil {
		return err
	}
	n.starter = nsinit.NewStarter()
	defer n.starter.Close() // after the workers have killed every container
	broadcaster, recorder := newRecorder(n)
	defer broadcaster.Shutdown()
	n.recorder = recorder

	podFactory := informers.NewSharedInformerFactoryWithOptions(n.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.cfg.Name).String()
		}))
	factory := informers.NewSharedInformerFactory(n.client, 0)
	podInformer := podFactory.Core().V1().Pods()
	n.pods = podInformer.Lister()
	n.configMaps = factory.Core().V1().ConfigMaps().Lister()
	n.secrets = factory.Core().V1().Secrets().Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.podChanged(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { n.podChanged(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				n.podDeleted(pod)
			}
		},
	}); err != nil {
		return err
	}

	runCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	n.mu.Lock()
	n.ctx = runCtx
	n.mu.Unlock()

	informerCtx, stopInformers := context.WithCancel(ctx)
	defer stopInformers()
	factory.Start(informerCtx.Done())
	factory.WaitForCacheSync(informerCtx.Done())
	var statusWG sync.WaitGroup
	statusWG.Add(1)
	go func() { defer statusWG.Done(); n.status.run(runCtx, statusWorkers) }()
	podFactory.Start(informerCtx.Done())

	var hbWG sync.WaitGroup
	hbWG.Add(1)
	go func() { defer hbWG.Done(); n.heartbeat(ctx, node) }()
	n.log.Info("node ready", "kubeletPort", n.cfg.KubeletPort)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("node: kubelet server: %w", err)
	}

	// Stop: kill every container, wait for the workers, then stop the rest.
	stopInformers()
	podFactory.Shutdown()
	factory.Shutdown()
	n.mu.Lock()
	for _, w := range n.workers {
		w.stop()
	}
	n.mu.Unlock()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownGracePeriod):
		n.log.Warn("pod workers did not stop in time")
	}
	stopWorkers()
	statusWG.Wait()
	hbWG.Wait()
	n.cgroups.cleanup()
	n.cpu.cleanup()
	return err
}

// podChanged starts a worker for a new pod or hands the update to its worker.
func (n *Node) podChanged(pod *corev1.Pod) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w, ok := n.workers[pod.UID]; ok {
		w.update(pod)
		return
	}
	if n.ctx == nil || n.ctx.Err() != nil {
		return
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.DeletionTimestamp != nil {
		// Not ours to run (finished before this node started, or deleted
		// before it ran): only finish a pending deletion.
		if pod.DeletionTimestamp != nil {
			go func() {
				if err := n.deletePod(n.ctx, pod); err != nil && n.ctx.Err() == nil {
					n.log.Warn("finishing pod deletion", "err", err)
				}
			}()
		}
		return
	}
	w := newPodWorker(n, pod)
	n.workers[pod.UID] = w
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		w.run(n.ctx)
	}()
}

func (n *Node) podDeleted(pod *corev1.Pod) {
	n.mu.Lock()
	w, ok := n.workers[pod.UID]
	delete(n.workers, pod.UID)
	n.mu.Unlock()
	if ok {
		w.remove()
	}
}

func (n *Node) worker(uid types.UID) *podWorker {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.workers[uid]
}

// deletePod finishes a graceful deletion, as the kubelet does once the pod's
// containers are gone.
func (n *Node) deletePod(ctx context.Context, pod *corev1.Pod) error {
	err := n.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("deleting pod %s/%s: %w", pod.Namespace, pod.Name, err)
}

func (n *Node) capacity() corev1.ResourceList {
	c := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(defaultMaxPods, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(diskTotal(n.cfg.Dir), resource.BinarySI),
	}
	for k, v := range n.cfg.Capacity {
		c[k] = v
	}
	return c
}

func (n *Node) nodeConditions(now metav1.Time, old []corev1.NodeCondition) []corev1.NodeCondition {
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
	}
	for i := range conds {
		conds[i].LastHeartbeatTime = now
		conds[i].LastTransitionTime = now
		for _, o := range old {
			if o.Type == conds[i].Type && o.Status == conds[i].Status {
				conds[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	return conds
}

func (n *Node) nodeStatus(old corev1.NodeStatus) corev1.NodeStatus {
	capacity := n.capacity()
	hostname, _ := os.Hostname()
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions:  n.nodeConditions(metav1.Now(), old.Conditions),
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: podIP},
			{Type: corev1.NodeHostName, Address: n.cfg.Name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{
			KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(n.cfg.KubeletPort)},
		},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               cmp.Or(readTrim("/etc/machine-id"), hostname),
			SystemUUID:              n.cfg.Name,
			BootID:                  readTrim("/proc/sys/kernel/random/boot_id"),
			KernelVersion:           readTrim("/proc/sys/kernel/osrelease"),
			OSImage:                 "kubebox process node",
			ContainerRuntimeVersion: "kubebox://" + KubeletVersion,
			KubeletVersion:          KubeletVersion,
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
		},
	}
}

// register creates the Node, or takes over an existing one of that name.
func (n *Node) register(ctx context.Context) (*corev1.Node, error) {
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.cfg.Name,
			Labels: map[string]string{
				corev1.LabelHostname:   n.cfg.Name,
				corev1.LabelOSStable:   runtime.GOOS,
				corev1.LabelArchStable: runtime.GOARCH,
			},
		},
		Status: n.nodeStatus(corev1.NodeStatus{}),
	}
	var node *corev1.Node
	err := retry(ctx, func() error {
		created, err := n.client.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			created, err = n.client.CoreV1().Nodes().Get(ctx, n.cfg.Name, metav1.GetOptions{})
		}
		if err != nil {
			return err
		}
		created.Status = n.nodeStatus(created.Status)
		node, err = n.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("node: registering node %s: %w", n.cfg.Name, err)
	}
	return node, nil
}

// heartbeat renews the node's Lease and refreshes its Ready condition, as
// the kubelet does, so the node-lifecycle controller keeps the node healthy.
func (n *Node) heartbeat(ctx context.Context, node *corev1.Node) {
	leases := n.client.CoordinationV1().Leases(leaseNamespace)
	var lease *coordinationv1.Lease
	renew := func() {
		now := metav1.NewMicroTime(time.Now())
		if lease != nil {
			l := lease.DeepCopy()
			l.Spec.RenewTime = &now
			updated, err := leases.Update(ctx, l, metav1.UpdateOptions{})
			if err == nil {
				lease = updated
				return
			}
			if ctx.Err() == nil {
				n.log.Warn("renewing node lease", "err", err)
			}
			lease = nil
		}
		got, err := leases.Get(ctx, n.cfg.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			got, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{
					Name:      n.cfg.Name,
					Namespace: leaseNamespace,
					OwnerReferences: []metav1.OwnerReference{{
						APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
					}},
				},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(n.cfg.Name),
					LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
					RenewTime:            &now,
				},
			}, metav1.CreateOptions{})
			if err == nil {
				lease = got
			}
			return
		}
		if err != nil {
			return
		}
		got.Spec.HolderIdentity = ptr.To(n.cfg.Name)
		got.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration / time.Second))
		got.Spec.RenewTime = &now
		if updated, err := leases.Update(ctx, got, metav1.UpdateOptions{}); err == nil {
			lease = updated
		}
	}
	refreshStatus := func() {
		cur, err := n.client.CoreV1().Nodes().Get(ctx, n.cfg.Name, metav1.GetOptions{})
		if err != nil {
			return
		}
		cur.Status = n.nodeStatus(cur.Status)
		if _, err := n.client.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
			n.log.Warn("updating node status", "err", err)
		}
	}
	renew()
	leaseTick := time.NewTicker(leaseRenewInterval)
	defer leaseTick.Stop()
	statusTick := time.NewTicker(nodeStatusInterval)
	defer statusTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-leaseTick.C:
			renew()
		case <-statusTick.C:
			refreshStatus()
		}
	}
}

// retry calls f until it succeeds or ctx is done, backing off up to 2s.
func retry(ctx context.Context, f func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(trimSpace(b))
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
