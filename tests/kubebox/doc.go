// Package kubebox runs a real Kubernetes control plane for tests.
package kubebox
