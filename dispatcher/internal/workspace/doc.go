// Package workspace is the Kubernetes side of a managed project's workspace:
// the pure builder of its objects (Objects: namespace, ServiceAccount,
// Secrets, a one-replica StatefulSet whose pod clones the repository in an
// init container, and the runner's exec RoleBinding) and a Manager that
// creates, checks and deletes them one step at a time, each call idempotent,
// so a durable provisioning job can retry and roll back.
//
// Every object carries Kiln's labels (app.kubernetes.io/managed-by: kiln and
// kiln.dev/project: <project id>); an object of the same name without them
// is never adopted, changed or deleted (ErrNotOurs).
//
// Repository credentials live only in the git Secret, mounted read-only into
// the clone init container and read by a git credential helper (HTTPS) or
// ssh -i (SSH); they are never in the remote URL, .git/config, argv, the
// main container or an error. The agent, exec'd into the main container,
// sees the env Secret (secret_env and add-on URLs) and the plain env.
//
// It is not the provisioning orchestration (steps, retries, rollback order,
// database state: that is the caller's), it does not provision add-ons
// (dispatcher/internal/addons), and it keeps no watch or cache running:
// CheckWorkspace uses a bounded watch per call.
package workspace
