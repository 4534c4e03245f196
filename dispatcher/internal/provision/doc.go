// Package provision provisions and retires managed projects' workspaces,
// durably, as River jobs: the steps of a project (namespace, service
// account, secret, one per add-on, runner access, workspace) run in order,
// each idempotent, their state in project_steps, so a dispatcher killed
// mid-way resumes where it was. A step that still fails after its attempts
// rolls back every step that ran, in reverse, and the project ends failed;
// DELETE runs the same undo after cancelling the project's builds. One
// project is worked by one replica at a time (a Postgres advisory lock).
//
// It is not the Kubernetes objects themselves (package workspace builds and
// applies those) nor the add-on servers' SQL and ACLs (package addons): it
// orders them, records them and undoes them.
package provision
