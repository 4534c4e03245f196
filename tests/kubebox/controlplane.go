package kubebox

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// startEtcdAndAPIServer starts etcd, then kube-apiserver, and waits until the
// apiserver's /readyz is ok. A port taken between our probe and the child's
// bind (another cluster starting at the same moment) means a retry with new
// ports.
func (c *Cluster) startEtcdAndAPIServer(ctx context.Context, extraArgs []string) error {
	var err error
	for range 3 {
		var etcd, api *process
		etcd, api, err = c.tryEtcdAndAPIServer(ctx, extraArgs)
		if err == nil {
			return nil
		}
		if !addrInUse(err) || ctx.Err() != nil {
			return err
		}
		api.stop(0)
		etcd.stop(0)
		os.RemoveAll(filepath.Join(c.dir, "etcd"))
	}
	return err
}

func (c *Cluster) tryEtcdAndAPIServer(ctx context.Context, extraArgs []string) (etcd, api *process, err error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	c.apiPort, err = freePort()
	if err != nil {
		return nil, nil, err
	}
	etcdURL := "http://" + hostPort(clientPort)
	peerURL := "http://" + hostPort(peerPort)
	etcd, err = c.start("etcd", []string{
		"--name=kubebox",
		"--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=kubebox=" + peerURL,
		// Test data is thrown away: durability buys nothing and costs
		// much of the pod-start throughput.
		"--unsafe-no-fsync",
		"--log-level=warn",
	})
	if err != nil {
		return nil, nil, err
	}
	if err := waitFor(ctx, "etcd health", []*process{etcd}, func(ctx context.Context) (bool, error) {
		return httpOK(ctx, etcdURL+"/health"), nil
	}); err != nil {
		return etcd, nil, err
	}

	server := "https://" + hostPort(c.apiPort)
	if err := c.writeConfigs(server); err != nil {
		return etcd, nil, err
	}
	pki := c.pki.path
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		// The endpoint reconcilers refuse a loopback address; pods reach
		// the apiserver through KUBERNETES_SERVICE_HOST=127.0.0.1 anyway.
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(c.apiPort),
		"--tls-cert-file=" + pki("apiserver.crt"),
		"--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--service-account-key-file=" + pki("sa.pub"),
		"--service-account-signing-key-file=" + pki("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
		"--event-ttl=1h",
	}
	api, err = c.start("kube-apiserver", append(args, extraArgs...))
	if err != nil {
		return etcd, nil, err
	}
	readyz := c.client.Discovery().RESTClient().Get().AbsPath("/readyz")
	err = waitFor(ctx, "kube-apiserver /readyz", []*process{etcd, api}, func(ctx context.Context) (bool, error) {
		_, err := readyz.DoRaw(ctx)
		return err == nil, nil
	})
	return etcd, api, err
}

// writeConfigs writes the kubeconfigs of the admin, the controller manager
// and the scheduler, and the scheduler's configuration, and builds the
// admin client.
func (c *Cluster) writeConfigs(server string) error {
	ca := c.pki.ca.Cert
	if err := writeKubeconfig(c.kubeconfig, server, "kubebox-admin", ca, c.pki.admin); err != nil {
		return err
	}
	if err := writeKubeconfig(c.configPath("controller-manager.kubeconfig"), server,
		"system:kube-controller-manager", ca, c.pki.controllers); err != nil {
		return err
	}
	if err := writeKubeconfig(c.configPath("scheduler.kubeconfig"), server,
		"system:kube-scheduler", ca, c.pki.scheduler); err != nil {
		return err
	}
	// Short backoffs so a pod that becomes schedulable is retried quickly.
	sched := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 2
`, c.configPath("scheduler.kubeconfig"))
	if err := os.WriteFile(c.configPath("scheduler.yaml"), []byte(sched), 0o644); err != nil {
		return fmt.Errorf("writing scheduler config: %w", err)
	}
	c.restConfig = restConfigFor(server, ca, c.pki.admin)
	var err error
	c.client, err = kubernetes.NewForConfig(c.restConfig)
	return err
}

func (c *Cluster) configPath(name string) string { return filepath.Join(c.dir, "config", name) }

// startControllers starts kube-controller-manager and kube-scheduler. Neither
// serves HTTPS (--secure-port=0), so they need no ports.
func (c *Cluster) startControllers(opts Options) error {
	pki := c.pki.path
	kcm := []string{
		"--kubeconfig=" + c.configPath("controller-manager.kubeconfig"),
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials",
		"--service-account-private-key-file=" + pki("sa.key"),
		"--root-ca-file=" + pki("ca.crt"),
		"--cluster-signing-cert-file=" + pki("ca.crt"),
		"--cluster-signing-key-file=" + pki("ca.key"),
		"--kube-api-qps=300",
		"--kube-api-burst=600",
		"--concurrent-job-syncs=20",
		"--concurrent-ttl-after-finished-syncs=20",
		"--concurrent-gc-syncs=40",
		"--node-monitor-period=2s",
		"--namespace-sync-period=1m",
		"--resource-quota-sync-period=30s",
	}
	if _, err := c.start("kube-controller-manager", append(kcm, opts.ControllerManagerArgs...)); err != nil {
		return err
	}
	sched := []string{
		"--config=" + c.configPath("scheduler.yaml"),
		"--secure-port=0",
	}
	_, err := c.start("kube-scheduler", append(sched, opts.SchedulerArgs...))
	return err
}

// waitReady waits for a Ready, untainted Node, the default ServiceAccount
// and the kube-root-ca.crt ConfigMap in "default" (pods need both).
func (c *Cluster) waitReady(ctx context.Context) error {
	c.mu.Lock()
	procs := append([]*process(nil), c.procs...)
	c.mu.Unlock()
	return waitFor(ctx, "a Ready node and the default ServiceAccount", procs, func(ctx context.Context) (bool, error) {
		select {
		case <-c.nodeDone:
			return false, fmt.Errorf("%w: %v", errNodeStopped, c.nodeErr)
		default:
		}
		node, err := c.client.CoreV1().Nodes().Get(ctx, c.nodeName, metav1.GetOptions{})
		if err != nil || !nodeSchedulable(node) {
			return false, nil
		}
		if _, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, nil
		}
		_, err = c.client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil, nil
	})
}

// nodeSchedulable reports whether node is Ready and carries no taint that
// keeps ordinary pods off it (the not-ready taint is removed by the node
// lifecycle controller once it sees the node Ready).
func nodeSchedulable(node *corev1.Node) bool {
	ready := false
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return false
		}
	}
	return ready && !node.Spec.Unschedulable
}

// waitFor polls cond every 100ms until it is true, it fails, a watched
// process exits, or ctx ends.
func waitFor(ctx context.Context, what string, watch []*process, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range watch {
			if err := p.exited(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		reqCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := cond(reqCtx)
		cancel()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

func httpOK(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
