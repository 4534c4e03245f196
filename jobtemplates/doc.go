// Package jobtemplates is Kiln's catalog of build templates and the pure
// function that renders a build into the Kubernetes Job that runs it, plus the
// Secret holding the build's runner token.
//
// A Template (YAML, strict: unknown fields are errors) says how a build runs:
// the jobrunner image, its resources, deadline, TTL, service account, node
// selector and tolerations, the agent's settings (adapter, model, max turns,
// allowed and disallowed tools, permission mode), artifact globs and a prompt
// preamble. Templates ship embedded (templates/*.yaml, see Embedded); an
// operator adds or overrides them with a directory, typically a mounted
// ConfigMap (LoadDir, then Catalog.Merge). Every template is validated on load
// (Validate): a Catalog never holds one that would let the agent bypass
// permission checks, run unrestricted Bash, or commit or push itself, nor one
// naming a tool the pinned Claude Code (ClaudeCodeVersion) does not have, nor
// acceptEdits unacknowledged. docs/templates.md is the operator's guide.
//
// Render is pure: same input, same Job and Secret, no I/O. JobName, SecretName,
// the label constants, Selector and BuildIDOf are the naming contract the
// dispatcher's launcher and watcher share; the Env* constants and RunnerConfig
// are the contract with the jobrunner.
//
// It is not: a client of the cluster (creating, watching and deleting Jobs is
// the dispatcher's), the agent adapter or its command line (the jobrunner's),
// or the renderer of prompts and their variables (the jobrunner's, from the
// preamble carried in RunnerConfig).
package jobtemplates
