// Package rbac embeds Kiln's RBAC manifests so tests can apply exactly what
// is deployed. It is data, not code.
package rbac

import _ "embed"

// Dispatcher is dispatcher.yaml: the dispatcher's ServiceAccount, Role and RoleBinding.
//
//go:embed dispatcher.yaml
var Dispatcher []byte

// Runner is runner.yaml: the runner's ServiceAccount, Role and RoleBinding.
//
//go:embed runner.yaml
var Runner []byte
