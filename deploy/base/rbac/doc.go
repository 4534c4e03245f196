// Package rbac embeds Kiln's RBAC manifests so tests can apply exactly what
// is deployed. It is data, not code.
package rbac

import _ "embed"

// Dispatcher is dispatcher.yaml: the dispatcher's ServiceAccount, its Role and
// RoleBinding in the builds namespace, the provisioning ClusterRole and
// ClusterRoleBinding, the ClusterRole kiln-runner-exec it grants per project
// namespace, and the ValidatingAdmissionPolicy (and binding) confining its writes.
//
//go:embed dispatcher.yaml
var Dispatcher []byte

// Runner is runner.yaml: the runner's ServiceAccount, Role and RoleBinding.
//
//go:embed runner.yaml
var Runner []byte
