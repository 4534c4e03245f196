package kubebox

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kilnbuild/kiln/tests/kubebox/node"
)

// startNode runs the process node (package node) in this process until Stop.
// The node's containers are re-executions of this binary (see node's nsinit),
// so any program that calls Start links the node package, which is enough.
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
	n, err := node.New(node.Config{
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
		Capacity:      opts.NodeCapacity,
		Log:           log,
	})
	if err != nil {
		return fmt.Errorf("starting node: %w", err)
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
	go func() {
		c.nodeErr = n.Run(ctx)
		close(done)
	}()
	return nil
}
