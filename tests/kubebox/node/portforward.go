package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

type portForwarderFunc func(ctx context.Context, port int32, stream io.ReadWriteCloser) error

func (f portForwarderFunc) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	return f(ctx, port, stream)
}

// servePortForward forwards to 127.0.0.1: pods share the node's network.
func (n *Node) servePortForward(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("pod")
	pod, err := n.pods.Pods(ns).Get(name)
	if err != nil || (r.PathValue("uid") != "" && string(pod.UID) != r.PathValue("uid")) {
		http.Error(w, fmt.Sprintf("pod %s/%s not found", ns, name), http.StatusNotFound)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	forward := portForwarderFunc(func(ctx context.Context, port int32, stream io.ReadWriteCloser) error {
		defer stream.Close()
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(podIP, strconv.Itoa(int(port))))
		if err != nil {
			return fmt.Errorf("failed to connect to localhost:%d inside namespace %q: %w", port, name, err)
		}
		defer conn.Close()
		errc := make(chan error, 2)
		go func() { _, err := io.Copy(conn, stream); errc <- err }()
		go func() { _, err := io.Copy(stream, conn); errc <- err }()
		select {
		case err = <-errc:
		case <-ctx.Done():
		}
		return err
	})
	portforward.ServePortForward(w, r, forward, name, string(pod.UID), opts, execIdleTimeout,
		remotecommand.DefaultStreamCreationTimeout, portforward.SupportedProtocols)
}
