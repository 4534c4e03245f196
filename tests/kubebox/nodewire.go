package kubebox

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// nodeConfig mirrors node.Config, the interface between the control plane
// and the process node (tests/kubebox/node).
type nodeConfig struct {
	Client        kubernetes.Interface
	Name          string
	Images        map[string]string
	Dir           string
	APIServerHost string
	APIServerPort int
	CACert        []byte
	KubeletPort   int
	ServingCert   []byte
	ServingKey    []byte
	ClientCA      []byte
}

// startNode runs the process node in this process until Stop.
func (c *Cluster) startNode(opts Options) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	log, err := c.nodeLogger()
	if err != nil {
		return fmt.Errorf("opening node log: %w", err)
	}
	cfg := rest.CopyConfig(c.restConfig) // the node's rate limit is its own
	cfg.QPS, cfg.Burst = 300, 600
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		cancel()
		return errStopped
	}
	c.nodeStop, c.nodeDone = cancel, done
	c.mu.Unlock()
	err = runNode(ctx, nodeConfig{
		Client:        client,
		Name:          c.nodeName,
		Images:        opts.Images,
		Dir:           c.dir + "/node",
		APIServerHost: "127.0.0.1",
		APIServerPort: c.apiPort,
		CACert:        c.pki.ca.Cert,
		KubeletPort:   port,
		ServingCert:   c.pki.nodeServing.Cert,
		ServingKey:    c.pki.nodeServing.Key,
		ClientCA:      c.pki.ca.Cert,
	}, log, func(err error) {
		c.nodeErr = err
		close(done)
	})
	if err != nil {
		cancel()
		close(done)
		return fmt.Errorf("starting node: %w", err)
	}
	return nil
}
