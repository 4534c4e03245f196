//go:build tools

// This file pins the control-plane programs that build.sh compiles, so that
// `go mod tidy` keeps their dependencies in go.mod and go.sum.
package kubebox

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
