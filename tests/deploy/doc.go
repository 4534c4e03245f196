// Package deploy tests Kiln's deployment artefacts: the kustomize base and
// overlays under deploy/ (rendered with `kubectl kustomize` and applied to
// kubebox with a server-side dry run, plus structural checks against
// docs/design.md), the job template copies the base ships, and the Dockerfiles.
// It has no code of its own.
package deploy
