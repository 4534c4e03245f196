package jobtemplates

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// minimalYAML is the smallest valid template: everything else has a default.
const minimalYAML = `
agent:
  allowedTools: [Read]
`

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	got, err := Parse("ops/x.yaml", []byte(minimalYAML))
	require.NoError(t, err)
	want := &Template{
		Name:                          "x",
		Runner:                        Runner{Image: DefaultImage, PullPolicy: corev1.PullIfNotPresent},
		ActiveDeadlineSeconds:         3600,
		TTLSecondsAfterFinished:       3600,
		TerminationGracePeriodSeconds: 60,
		ServiceAccountName:            "kiln-runner",
		Agent: Agent{
			Adapter:         "claude-code",
			MaxTurns:        50,
			AllowedTools:    []string{"Read"},
			DisallowedTools: []string{"Bash(git commit:*)", "Bash(git push:*)"},
			PermissionMode:  "default",
		},
		Limits: Limits{MaxTurns: 50},
	}
	if d := cmp.Diff(want, got, quantityCmp); d != "" {
		t.Errorf("template (-want +got):\n%s", d)
	}
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
	}{
		{"tool patterns", `
agent:
  allowedTools: ["Bash(go test:*)", "Bash(npm run test *)", "Bash(git diff:*)", "Bash(make check)", "mcp__github__get_issue", "WebFetch(domain:go.dev)"]
  disallowedTools: ["Bash(git commit:*)", "Bash(git push:*)", "Bash(rm -rf:*)"]
`},
		{"plan", `
agent: {allowedTools: [Read], permissionMode: plan}
`},
		{"no agent", `
agent: {adapter: none, allowedTools: [Read]}
`},
		{"acceptEdits acknowledged", `
agent: {allowedTools: [Read, Edit, Write], permissionMode: acceptEdits, acceptEditsFilesystemCommands: true}
`},
		{"every tool of the pinned CLI, MCP tools", `
agent:
  allowedTools: [Bash(make:*), CronCreate, CronDelete, CronList, Edit, EnterWorktree, ExitWorktree, Glob, Grep, ListAgents, Monitor, NotebookEdit, "Read(./src/**)", ReportFindings, ScheduleWakeup, SendMessage, Skill, Task, TaskCreate, TaskGet, TaskList, TaskStop, TaskUpdate, ToolSearch, WebFetch, WebSearch, Workflow, Write, mcp__github]
  disallowedTools: [WebSearch, mcp__github__create_pull_request, "Edit(./.github/**)"]
`},
		{"full pod settings", `
name: x
runner: {image: "registry.local:5000/kiln/runner@sha256:0123", pullPolicy: Always}
resources:
  requests: {cpu: 500m, memory: 1Gi}
  limits: {cpu: "1", memory: 1Gi}
activeDeadlineSeconds: 86400
ttlSecondsAfterFinished: 60
terminationGracePeriodSeconds: 5
serviceAccountName: builds.runner
nodeSelector: {"kiln.dev/pool": builds}
tolerations:
  - {operator: Exists}
  - {key: dedicated, value: kiln, effect: NoExecute, tolerationSeconds: 60}
agent: {adapter: claude-code, model: claude-sonnet-4-5, maxTurns: 1000, allowedTools: [Read]}
artifacts: {globs: ["coverage.out", "dist/*.tar.gz"]}
promptPreamble: be brief
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("x.yaml", []byte(tt.yaml))
			require.NoError(t, err)
		})
	}
}

// TestParseRejects covers every validation rule, each with the message an
// operator sees.
func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{"not yaml", "agent: [", "templates/x.yaml: error converting YAML to JSON"},
		{"unknown field", "agent: {allowedTools: [Read]}\nimage: foo\n", `templates/x.yaml: error unmarshaling JSON: while decoding JSON: json: unknown field "image"`},
		{"unknown nested field", "agent: {allowedTools: [Read], skipPermissions: true}\n", `unknown field "skipPermissions"`},
		{"name differs from file", "name: other\n" + minimalYAML, `templates/x.yaml: name: must match the file name "x" (got "other")`},
		{"description too long", "description: " + strings.Repeat("d", 1025) + minimalYAML, "templates/x.yaml: description: must be at most 1024 bytes"},
		{"bad image", "runner: {image: 'Has Space'}" + minimalYAML, `templates/x.yaml: runner.image: must be an image reference like repo/name:tag (got "Has Space")`},
		{"bad pull policy", "runner: {pullPolicy: Sometimes}" + minimalYAML, `runner.pullPolicy: must be one of Always, IfNotPresent, Never (got "Sometimes")`},
		{"resource claims", "resources: {claims: [{name: gpu}]}" + minimalYAML, "resources.claims: not supported"},
		{"negative resource", "resources: {limits: {memory: -1Mi}}" + minimalYAML, "resources.limits.memory: must not be negative (got -1Mi)"},
		{"request over limit", "resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}" + minimalYAML, "resources.requests.cpu: must not exceed its limit (2 > 1)"},
		{"deadline too long", "activeDeadlineSeconds: 90000" + minimalYAML, "activeDeadlineSeconds: must be between 1 and 86400 (got 90000)"},
		{"deadline negative", "activeDeadlineSeconds: -1" + minimalYAML, "activeDeadlineSeconds: must be between 1 and 86400 (got -1)"},
		{"ttl too short", "ttlSecondsAfterFinished: 10" + minimalYAML, "ttlSecondsAfterFinished: must be between 60 and 604800 (got 10)"},
		{"grace out of range", "terminationGracePeriodSeconds: 1" + minimalYAML, "terminationGracePeriodSeconds: must be between 5 and 600 (got 1)"},
		{"grace over deadline", "activeDeadlineSeconds: 30\nterminationGracePeriodSeconds: 60" + minimalYAML, "terminationGracePeriodSeconds: must be less than activeDeadlineSeconds (60 >= 30)"},
		{"bad service account", "serviceAccountName: Kiln_Runner" + minimalYAML, "serviceAccountName: "},
		{"bad node selector key", "nodeSelector: {'bad key': x}" + minimalYAML, `nodeSelector: key "bad key"`},
		{"bad node selector value", "nodeSelector: {pool: 'a b'}" + minimalYAML, "nodeSelector.pool: "},
		{"toleration empty key with Equal", "tolerations: [{operator: Equal, value: x}]" + minimalYAML, "tolerations[0].operator: must be Exists when key is empty"},
		{"toleration Exists with value", "tolerations: [{key: k, operator: Exists, value: x}]" + minimalYAML, "tolerations[0].value: must be empty when operator is Exists"},
		{"toleration bad operator", "tolerations: [{key: k, operator: In}]" + minimalYAML, `tolerations[0].operator: must be Exists or Equal (got "In")`},
		{"toleration bad effect", "tolerations: [{key: k, effect: Never}]" + minimalYAML, `tolerations[0].effect: must be NoSchedule, PreferNoSchedule or NoExecute (got "Never")`},
		{"toleration seconds without NoExecute", "tolerations: [{key: k, effect: NoSchedule, tolerationSeconds: 5}]" + minimalYAML, "tolerations[0].tolerationSeconds: only allowed with effect NoExecute"},
		{"toleration bad key", "tolerations: [{key: 'a b', operator: Exists}]" + minimalYAML, "tolerations[0].key: "},
		{"unknown adapter", "agent: {adapter: aider, allowedTools: [Read]}", `agent.adapter: must be one of claude-code, none (got "aider")`},
		{"bad model", "agent: {model: 'gpt 5', allowedTools: [Read]}", `agent.model: must be a model name like claude-sonnet-4-5 (got "gpt 5")`},
		{"max turns too high", "agent: {maxTurns: 1001, allowedTools: [Read]}", "agent.maxTurns: must be between 1 and 1000 (got 1001)"},
		{"max turns negative", "agent: {maxTurns: -1, allowedTools: [Read]}", "agent.maxTurns: must be between 1 and 1000 (got -1)"},
		{"bypass permissions", "agent: {permissionMode: bypassPermissions, allowedTools: [Read]}", `agent.permissionMode: "bypassPermissions" is never allowed`},
		{"dangerously skip", "agent: {permissionMode: dangerously-skip-permissions, allowedTools: [Read]}", `agent.permissionMode: "dangerously-skip-permissions" is never allowed`},
		{"unknown permission mode", "agent: {permissionMode: auto, allowedTools: [Read]}", `agent.permissionMode: must be one of default, acceptEdits, plan (got "auto")`},
		{"no allowed tools", "agent: {model: x}", "templates/x.yaml: agent.allowedTools: must not be empty"},
		{"empty allowed tools", "agent: {allowedTools: []}", "templates/x.yaml: agent.allowedTools: must not be empty"},
		{"malformed tool", "agent: {allowedTools: ['Read(']}", `agent.allowedTools[0]: must be a tool name or Tool(pattern)`},
		{"empty pattern", "agent: {allowedTools: ['Bash()']}", `agent.allowedTools[0]: "Bash()": pattern must not be empty`},
		{"bare Bash", "agent: {allowedTools: [Read, Bash]}", `agent.allowedTools[1]: "Bash": Bash must name a command, e.g. Bash(go test:*); bare Bash would allow any command`},
		{"Bash star", "agent: {allowedTools: ['Bash(*)']}", `agent.allowedTools[0]: "Bash(*)": Bash must name a command`},
		{"Bash colon star", "agent: {allowedTools: ['Bash(:*)']}", `"Bash(:*)": Bash must name a command`},
		{"Bash shell operators", "agent: {allowedTools: ['Bash(go test ./... && git push:*)']}", "pattern must be a plain command prefix, without shell operators"},
		{"Bash shell", "agent: {allowedTools: ['Bash(sh -c:*)']}", `"Bash(sh -c:*)": sh can run any command`},
		{"Bash env", "agent: {allowedTools: ['Bash(/usr/bin/env:*)']}", "env can run any command"},
		{"Bash any git", "agent: {allowedTools: ['Bash(git:*)']}", `"Bash(git:*)": must name a git subcommand`},
		{"Bash git flag", "agent: {allowedTools: ['Bash(git -C /x commit:*)']}", "must name a git subcommand"},
		{"Bash git commit", "agent: {allowedTools: ['Bash(git commit:*)']}", `"Bash(git commit:*)": commit and push are the runner's job, never the agent's`},
		{"Bash git push", "agent: {allowedTools: ['Bash(git push origin main)']}", "commit and push are the runner's job"},
		{"malformed disallowed", "agent: {allowedTools: [Read], disallowedTools: ['not a tool']}", "agent.disallowedTools[0]: must be a tool name or Tool(pattern)"},
		{"unknown allowed tool", "agent: {allowedTools: [Read, LS]}", `agent.allowedTools[1]: unknown tool "LS" (Claude Code 2.1.328 has: Bash, CronCreate, CronDelete, CronList, Edit, `},
		{"unknown allowed tool with pattern", "agent: {allowedTools: ['MultiEdit(./src/**)']}", `agent.allowedTools[0]: unknown tool "MultiEdit" (Claude Code 2.1.328 has: `},
		{"unknown disallowed tool", "agent: {allowedTools: [Read], disallowedTools: [TodoWrite]}", `agent.disallowedTools[0]: unknown tool "TodoWrite" (Claude Code 2.1.328 has: `},
		{"tool in the wrong case", "agent: {allowedTools: [read]}", `agent.allowedTools[0]: unknown tool "read", did you mean "Read"? (Claude Code 2.1.328 has: `},
		{"Bash rule in the wrong case", "agent: {allowedTools: ['bash(go test:*)']}", `unknown tool "bash", did you mean "Bash"?`},
		{"acceptEdits not acknowledged", "agent: {allowedTools: [Read, Edit], permissionMode: acceptEdits}",
			"agent.permissionMode: acceptEdits also lets the agent run mkdir, touch, rm, rmdir, mv, cp, sed in the workdir without a Bash rule; set agent.acceptEditsFilesystemCommands: true to accept that"},
		{"acknowledgement without acceptEdits", "agent: {allowedTools: [Read], acceptEditsFilesystemCommands: true}",
			`agent.acceptEditsFilesystemCommands: only with permissionMode acceptEdits (got "default")`},
		{"glob absolute", "artifacts: {globs: [/etc/passwd]}" + minimalYAML, `artifacts.globs[0]: must be a clean path relative to the workdir, without .. (got "/etc/passwd")`},
		{"glob escapes", "artifacts: {globs: ['../secrets/*']}" + minimalYAML, "artifacts.globs[0]: must be a clean path relative to the workdir"},
		{"glob empty", "artifacts: {globs: ['']}" + minimalYAML, "artifacts.globs[0]: must not be empty"},
		{"glob bad", "artifacts: {globs: ['a[']}" + minimalYAML, `artifacts.globs[0]: bad pattern "a["`},
		{"artifact max bytes", "artifacts: {maxBytes: 2147483648}" + minimalYAML, "artifacts.maxBytes: must be between 1 and 1073741824"},
		{"preamble too long", "promptPreamble: " + strings.Repeat("p", 64<<10+1) + minimalYAML, "promptPreamble: must be at most 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse("templates/x.yaml", []byte(tt.yaml))
			require.Error(t, err)
			require.Nil(t, got)
			require.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestValidateListsEveryError(t *testing.T) {
	t.Parallel()
	tmpl := &Template{Name: "Bad Name", Agent: Agent{PermissionMode: "bypassPermissions"}}
	err := Validate(tmpl)
	var verr *ValidationError
	require.True(t, errors.As(err, &verr))
	var fields []string
	for _, fe := range verr.Errors {
		fields = append(fields, fe.Field)
	}
	require.Equal(t, []string{
		"name", "runner.image", "runner.pullPolicy", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
		"terminationGracePeriodSeconds", "serviceAccountName", "agent.adapter", "agent.maxTurns",
		"agent.permissionMode", "agent.allowedTools", "agent.disallowedTools", "agent.disallowedTools",
	}, fields)
	require.Error(t, Validate(nil))
}

func TestValidateEmbeddedTemplatesStayValid(t *testing.T) {
	t.Parallel()
	c := Embedded()
	for _, name := range c.Names() {
		tmpl, _ := c.Get(name)
		require.NoError(t, Validate(tmpl), name)
		require.NotContains(t, tmpl.Agent.AllowedTools, "Bash", name)
		require.NotEqual(t, PermissionAcceptEdits, tmpl.Agent.PermissionMode, "%s: built-in templates keep default or plan", name)
		require.Subset(t, tmpl.Agent.DisallowedTools, RequiredDisallowedTools, name)
		lim := tmpl.Resources.Limits[corev1.ResourceMemory]
		require.True(t, lim.Cmp(resource.MustParse("1Mi")) > 0, "%s: memory limit, for OOM reporting", name)
	}
}
