package jobtemplates

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Defaults filled in by Parse for fields a template file leaves out.
const (
	DefaultImage                         = "kilnbuild/kiln-jobrunner:latest"
	DefaultPullPolicy                    = corev1.PullIfNotPresent
	DefaultServiceAccountName            = "kiln-runner"
	DefaultActiveDeadlineSeconds   int64 = 3600
	DefaultTTLSecondsAfterFinished int32 = 3600
	DefaultTerminationGracePeriod  int64 = 60
	DefaultAdapter                       = AdapterClaudeCode
	DefaultPermissionMode                = PermissionDefault
	DefaultMaxTurns                      = 50
	DefaultMaxArtifactBytes        int64 = 10 << 20
)

// AdapterClaudeCode is the adapter name of Claude Code (`claude -p`).
const AdapterClaudeCode = "claude-code"

// AdapterNone runs no agent: the runner fetches its build, prepares the
// workspace in the project pod and runs the git step as for any build, and
// its result says that no agent ran. It is for measuring everything around
// the agent (make bench-e2e); only an operator's template can choose it, a
// build's spec cannot.
const AdapterNone = "none"

// Adapters lists the agent adapters the jobrunner implements. A template naming
// another one is rejected on load rather than failing every build at run time.
var Adapters = []string{AdapterClaudeCode, AdapterNone}

// Permission modes a template may choose. bypassPermissions (and with it
// --dangerously-skip-permissions) is never one of them: see docs/design.md, invariant 7.
const (
	PermissionDefault     = "default"
	PermissionAcceptEdits = "acceptEdits"
	PermissionPlan        = "plan"
)

// PermissionModes lists the permission modes a template may use.
var PermissionModes = []string{PermissionDefault, PermissionAcceptEdits, PermissionPlan}

// RequiredDisallowedTools are always in a template's agent.disallowedTools:
// commit and push are the runner's git step, never the agent's. Parse adds
// them when a file leaves them out; Validate rejects a template without them.
var RequiredDisallowedTools = []string{"Bash(git commit:*)", "Bash(git push:*)"}

// Template describes how a build runs: the runner's image and pod settings,
// the agent's settings, artifacts and the prompt preamble. Its YAML form uses
// the JSON field names below (camelCase, as Kubernetes objects do), so
// resources and tolerations are written exactly as in a pod spec.
//
// Templates in a Catalog are validated and read-only; Catalog.Get returns a copy.
type Template struct {
	// Name is the template's name, a DNS-1123 label equal to its file name
	// without .yaml. BuildSpec.template refers to it.
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`

	Runner Runner `json:"runner"`
	// Resources of the jobrunner container. The agent itself runs in the
	// project's pod, so these are small.
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// ActiveDeadlineSeconds bounds the whole build (default 3600, at most 86400).
	ActiveDeadlineSeconds int64 `json:"activeDeadlineSeconds,omitempty"`
	// TTLSecondsAfterFinished keeps a finished Job around for the watcher
	// (default 3600, at least 60).
	TTLSecondsAfterFinished int32 `json:"ttlSecondsAfterFinished,omitempty"`
	// TerminationGracePeriodSeconds is how long the runner has after SIGTERM
	// to stop the agent and report "cancelled" (default 60, 5 to 600, and
	// less than the deadline).
	TerminationGracePeriodSeconds int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// ServiceAccountName is the runner's service account (default kiln-runner);
	// it needs pods get and pods/exec create in project namespaces.
	ServiceAccountName string              `json:"serviceAccountName,omitempty"`
	NodeSelector       map[string]string   `json:"nodeSelector,omitempty"`
	Tolerations        []corev1.Toleration `json:"tolerations,omitempty"`

	Agent     Agent     `json:"agent"`
	Limits    Limits    `json:"limits,omitempty"`
	Artifacts Artifacts `json:"artifacts,omitempty"`
	// PromptPreamble goes before the spec's prompt (at most 64 KiB).
	PromptPreamble string `json:"promptPreamble,omitempty"`
}

// Runner is the jobrunner container's image.
type Runner struct {
	Image      string            `json:"image,omitempty"`      // default DefaultImage
	PullPolicy corev1.PullPolicy `json:"pullPolicy,omitempty"` // default IfNotPresent
}

// Agent holds the coding agent's settings, passed to the runner's adapter.
type Agent struct {
	Adapter string `json:"adapter,omitempty"` // one of Adapters; default claude-code; none runs no agent
	Model   string `json:"model,omitempty"`   // empty: the CLI's default
	// MaxTurns bounds the agent's turns (default 50, at most 1000). A
	// build's max_turns replaces it, up to Limits.MaxTurns.
	MaxTurns int `json:"maxTurns,omitempty"`
	// MaxBudgetUSD caps what the agent may spend on one build, in US
	// dollars (--max-budget-usd); 0: no cap. A build's max_budget_usd
	// replaces it, up to Limits.MaxBudgetUSD.
	MaxBudgetUSD float64 `json:"maxBudgetUSD,omitempty"`
	// AllowedTools is the explicit list of tools the agent may use without
	// asking: "Read", "Edit", "Bash(go test:*)", "mcp__server__tool"... See
	// Validate for what is refused.
	AllowedTools []string `json:"allowedTools"`
	// DisallowedTools are denied outright; RequiredDisallowedTools are always in it.
	DisallowedTools []string `json:"disallowedTools,omitempty"`
	// PermissionMode is one of PermissionModes (default "default").
	PermissionMode string `json:"permissionMode,omitempty"`
	// AcceptEditsFilesystemCommands must be true with permission mode
	// acceptEdits and is refused with any other: it says the template's
	// author knows that acceptEdits lets the agent run AcceptEditsCommands
	// (rm -rf, mkdir, mv...) in the workdir without a Bash rule. It grants
	// nothing itself.
	AcceptEditsFilesystemCommands bool `json:"acceptEditsFilesystemCommands,omitempty"`
}

// Limits are the most a build's spec may ask of a template, and a
// per-project spending cap; operators set them.
type Limits struct {
	// MaxTurns is the largest max_turns a build may ask for (default
	// agent.maxTurns: a build may ask for fewer turns, not more).
	MaxTurns int `json:"maxTurns,omitempty"`
	// MaxBudgetUSD is the largest max_budget_usd a build may ask for
	// (default agent.maxBudgetUSD; when both are 0 a build's budget is not capped).
	MaxBudgetUSD float64 `json:"maxBudgetUSD,omitempty"`
	// MonthlyBudgetUSD caps what one project's builds may spend in a
	// calendar month (UTC, every template's builds counted); once reached,
	// new builds with this template are refused (429). 0: no cap.
	MonthlyBudgetUSD float64 `json:"monthlyBudgetUSD,omitempty"`
}

// Artifacts selects files in the project's workdir that the runner uploads.
type Artifacts struct {
	// Globs are path.Match patterns relative to the workdir.
	Globs []string `json:"globs,omitempty"`
	// MaxBytes caps each artifact (default 10 MiB, at most 1 GiB).
	MaxBytes int64 `json:"maxBytes,omitempty"`
}

// Parse reads one template file (strict YAML: unknown and duplicate fields are
// errors), fills defaults and validates it. file names the template: its base
// name without .yaml is the template's name; errors start with file.
func Parse(file string, data []byte) (*Template, error) {
	var t Template
	if err := yaml.UnmarshalStrict(data, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	base := strings.TrimSuffix(strings.TrimSuffix(path.Base(file), ".yaml"), ".yml")
	if t.Name == "" {
		t.Name = base
	} else if t.Name != base {
		return nil, fmt.Errorf("%s: name: must match the file name %q (got %q)", file, base, t.Name)
	}
	t.setDefaults()
	if err := Validate(&t); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &t, nil
}

// setDefaults fills the fields a file may leave out.
func (t *Template) setDefaults() {
	if t.Runner.Image == "" {
		t.Runner.Image = DefaultImage
	}
	if t.Runner.PullPolicy == "" {
		t.Runner.PullPolicy = DefaultPullPolicy
	}
	if t.ServiceAccountName == "" {
		t.ServiceAccountName = DefaultServiceAccountName
	}
	if t.ActiveDeadlineSeconds == 0 {
		t.ActiveDeadlineSeconds = DefaultActiveDeadlineSeconds
	}
	if t.TTLSecondsAfterFinished == 0 {
		t.TTLSecondsAfterFinished = DefaultTTLSecondsAfterFinished
	}
	if t.TerminationGracePeriodSeconds == 0 {
		t.TerminationGracePeriodSeconds = DefaultTerminationGracePeriod
	}
	if t.Agent.Adapter == "" {
		t.Agent.Adapter = DefaultAdapter
	}
	if t.Agent.PermissionMode == "" {
		t.Agent.PermissionMode = DefaultPermissionMode
	}
	if t.Agent.MaxTurns == 0 {
		t.Agent.MaxTurns = DefaultMaxTurns
	}
	if t.Limits.MaxTurns == 0 {
		t.Limits.MaxTurns = t.Agent.MaxTurns
	}
	if t.Limits.MaxBudgetUSD == 0 {
		t.Limits.MaxBudgetUSD = t.Agent.MaxBudgetUSD
	}
	for _, d := range RequiredDisallowedTools {
		if !slices.Contains(t.Agent.DisallowedTools, d) {
			t.Agent.DisallowedTools = append(t.Agent.DisallowedTools, d)
		}
	}
	if t.Artifacts.MaxBytes == 0 && len(t.Artifacts.Globs) > 0 {
		t.Artifacts.MaxBytes = DefaultMaxArtifactBytes
	}
}

// DeepCopy returns a copy of t that shares no memory with it.
func (t *Template) DeepCopy() *Template {
	if t == nil {
		return nil
	}
	c := *t
	c.Resources = *t.Resources.DeepCopy()
	c.NodeSelector = maps.Clone(t.NodeSelector)
	if t.Tolerations != nil {
		c.Tolerations = make([]corev1.Toleration, len(t.Tolerations))
		for i := range t.Tolerations {
			t.Tolerations[i].DeepCopyInto(&c.Tolerations[i])
		}
	}
	c.Agent.AllowedTools = slices.Clone(t.Agent.AllowedTools)
	c.Agent.DisallowedTools = slices.Clone(t.Agent.DisallowedTools)
	c.Artifacts.Globs = slices.Clone(t.Artifacts.Globs)
	return &c
}
