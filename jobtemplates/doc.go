// Package jobtemplates is the catalog of build templates and the pure function
// that renders a build into a Kubernetes Job and its Secret. It does no I/O
// against a cluster.
package jobtemplates
