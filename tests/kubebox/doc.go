// Package kubebox runs a real Kubernetes control plane with a process-backed
// node, for tests and the demo.
//
// Start launches etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler (Kubernetes v1.37.2, built from Go modules by build.sh) on
// free ports of 127.0.0.1, with a CA made for the cluster, RBAC on and
// service-account tokens issued by the apiserver, and runs the node of
// package node in the calling process: pods bound to it run as local
// processes, and exec and logs go through the apiserver to it.
//
//	c, err := kubebox.Start(ctx, kubebox.Options{Images: map[string]string{"sh": "/bin/sh"}})
//	if err != nil { ... }
//	defer c.Stop()
//	client, err := kubernetes.NewForConfig(c.RESTConfig())
//
// Programs outside this module use the kubebox command instead
// (cmd/kubebox: `kubebox up --dir D`, `kubebox down --dir D`).
//
// It is not a conformant cluster: there is one node, no container runtime,
// no network isolation (every pod's IP is 127.0.0.1) and no kube-proxy, so
// Services route nowhere; pods reach the apiserver through
// KUBERNETES_SERVICE_HOST/PORT.
package kubebox
