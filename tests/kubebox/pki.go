package kubebox

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// clusterPKI is every certificate and key the cluster uses, all issued by
// one CA created for this cluster.
type clusterPKI struct {
	dir string
	ca  *keyPair

	apiServer     *keyPair // serving: 127.0.0.1, 10.0.0.1, localhost, kubernetes...
	kubeletClient *keyPair // apiserver -> node (exec, logs): system:masters
	admin         *keyPair // kubebox-admin, system:masters
	controllers   *keyPair // system:kube-controller-manager
	scheduler     *keyPair // system:kube-scheduler
	nodeServing   *keyPair // the node's kubelet API: 127.0.0.1, localhost, node name

	saKey, saPub []byte // service-account token signing (ES256)
}

// serviceIP is the first address of --service-cluster-ip-range, the
// ClusterIP of the "kubernetes" Service.
const (
	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1"
)

func newClusterPKI(dir, nodeName string) (*clusterPKI, error) {
	ca, err := newCA("kubebox-ca")
	if err != nil {
		return nil, err
	}
	p := &clusterPKI{dir: dir, ca: ca}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	reqs := []struct {
		dst *(*keyPair)
		req certRequest
	}{
		{&p.apiServer, certRequest{
			CommonName: "kube-apiserver",
			DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local"},
			IPs:    []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP)},
			Server: true,
		}},
		{&p.kubeletClient, certRequest{CommonName: "kube-apiserver-kubelet-client",
			Organization: []string{"system:masters"}, Client: true}},
		{&p.admin, certRequest{CommonName: "kubebox-admin", Organization: []string{"system:masters"}, Client: true}},
		{&p.controllers, certRequest{CommonName: "system:kube-controller-manager", Client: true}},
		{&p.scheduler, certRequest{CommonName: "system:kube-scheduler", Client: true}},
		{&p.nodeServing, certRequest{CommonName: "system:node:" + nodeName,
			Organization: []string{"system:nodes"}, DNSNames: []string{"localhost", nodeName}, IPs: loopback,
			Server: true}},
	}
	for _, r := range reqs {
		if *r.dst, err = ca.issue(r.req); err != nil {
			return nil, err
		}
	}
	if p.saKey, p.saPub, err = newServiceAccountKey(); err != nil {
		return nil, err
	}
	if err := p.write(); err != nil {
		return nil, fmt.Errorf("writing certificates: %w", err)
	}
	return p, nil
}

// write stores the files the child processes read.
func (p *clusterPKI) write() error {
	for name, kp := range map[string]*keyPair{
		"ca": p.ca, "apiserver": p.apiServer, "apiserver-kubelet-client": p.kubeletClient,
	} {
		if _, _, err := kp.write(p.dir, name); err != nil {
			return err
		}
	}
	if err := os.WriteFile(p.path("sa.key"), p.saKey, 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.path("sa.pub"), p.saPub, 0o644)
}

func (p *clusterPKI) path(name string) string { return filepath.Join(p.dir, name) }
