// Package node is kubebox's process kubelet: it registers a Node with a real
// control plane, runs the containers of the pods bound to it as local
// processes, reports their status as a kubelet would, and serves the kubelet
// API (exec, container logs) that the apiserver proxies to.
//
// Each container runs in its own mount and UTS namespace (see
// internal/nsinit), with its volumes bind-mounted at their mount paths and,
// when the cgroup v1 memory controller is writable, in its own memory cgroup.
// It is a test harness, not an isolation boundary: containers run as the
// node's user and see the host's filesystem and network. Images are not
// pulled; Config.Images maps each image to a host executable.
package node
