package jobtemplates

import (
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
)

// Limits enforced by Validate.
const (
	MaxActiveDeadlineSeconds   int64 = 24 * 3600
	MinTTLSecondsAfterFinished int32 = 60
	MaxTTLSecondsAfterFinished int32 = 7 * 24 * 3600
	MinTerminationGracePeriod  int64 = 5
	MaxTerminationGracePeriod  int64 = 600
	MaxMaxTurns                      = 1000
	MaxArtifactBytesLimit      int64 = 1 << 30
	MaxPromptPreambleBytes           = 64 << 10
	MaxDescriptionBytes              = 1024
)

// FieldError is one broken rule: Field is the template's YAML path
// ("agent.allowedTools[2]"), Rule says what is wrong.
type FieldError struct {
	Field string
	Rule  string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Rule }

// ValidationError lists every rule a template breaks, in field order.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.Error()
	}
	return strings.Join(parts, "; ")
}

func (e *ValidationError) add(field, format string, args ...any) {
	e.Errors = append(e.Errors, FieldError{Field: field, Rule: fmt.Sprintf(format, args...)})
}

func (e *ValidationError) err() error {
	if len(e.Errors) == 0 {
		return nil
	}
	return e
}

var (
	// toolSpec is a tool name, optionally followed by a parenthesised pattern.
	toolSpec   = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_-]*)(?:\((.*)\))?$`)
	modelName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,127}$`)
	imageRef   = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:@-]*$`)
	shellLikes = []string{"sh", "bash", "zsh", "dash", "ksh", "fish", "env", "eval", "exec", "sudo", "su", "xargs", "nohup", "command", "builtin"}
)

// Validate checks a template (after defaults) and returns a *ValidationError
// naming every field at fault, or nil. Parse and the Catalog loaders call it;
// the API relies on it never letting an unsafe template into a Catalog.
//
// Besides ranges and Kubernetes syntax it enforces the agent's safety rules:
//   - agent.permissionMode is default, acceptEdits or plan; bypassPermissions
//     (what --dangerously-skip-permissions turns on) is always refused;
//   - acceptEdits needs agent.acceptEditsFilesystemCommands: true, because
//     that mode also lets the agent run AcceptEditsCommands (rm -rf, mkdir,
//     mv...) in the workdir without any Bash rule;
//   - agent.allowedTools is not empty and every entry, there and in
//     agent.disallowedTools, is a tool name or Tool(pattern) with a non-empty
//     pattern, naming a tool of ClaudeCode2_1_328Tools or an MCP tool
//     (mcp__server__tool);
//   - Bash is only allowed with a command pattern: bare "Bash", "Bash(*)",
//     "Bash(:*)" and the like are refused, and so are patterns that would let
//     the agent commit or push ("Bash(git:*)", "Bash(git commit:*)",
//     "Bash(git -C …)"), or start a shell or command runner that can run
//     anything ("Bash(sh:*)", "Bash(env:*)", "Bash(xargs:*)"...);
//   - agent.disallowedTools holds RequiredDisallowedTools.
//
// Patterns are a guard against mistakes, not a sandbox: a build tool a
// template allows can still run arbitrary code in the project pod.
func Validate(t *Template) error {
	var v ValidationError
	if t == nil {
		v.add("template", "required")
		return &v
	}
	checkName(&v, "name", t.Name)
	if len(t.Description) > MaxDescriptionBytes {
		v.add("description", "must be at most %d bytes", MaxDescriptionBytes)
	}
	switch img := t.Runner.Image; {
	case img == "":
		v.add("runner.image", "required")
	case !imageRef.MatchString(img) || len(img) > 512:
		v.add("runner.image", "must be an image reference like repo/name:tag (got %q)", img)
	}
	switch t.Runner.PullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		v.add("runner.pullPolicy", "must be one of Always, IfNotPresent, Never (got %q)", t.Runner.PullPolicy)
	}
	checkResources(&v, t.Resources)
	if t.ActiveDeadlineSeconds < 1 || t.ActiveDeadlineSeconds > MaxActiveDeadlineSeconds {
		v.add("activeDeadlineSeconds", "must be between 1 and %d (got %d)", MaxActiveDeadlineSeconds, t.ActiveDeadlineSeconds)
	}
	if t.TTLSecondsAfterFinished < MinTTLSecondsAfterFinished || t.TTLSecondsAfterFinished > MaxTTLSecondsAfterFinished {
		v.add("ttlSecondsAfterFinished", "must be between %d and %d (got %d)", MinTTLSecondsAfterFinished, MaxTTLSecondsAfterFinished, t.TTLSecondsAfterFinished)
	}
	switch g := t.TerminationGracePeriodSeconds; {
	case g < MinTerminationGracePeriod || g > MaxTerminationGracePeriod:
		v.add("terminationGracePeriodSeconds", "must be between %d and %d (got %d)", MinTerminationGracePeriod, MaxTerminationGracePeriod, g)
	case g >= t.ActiveDeadlineSeconds && t.ActiveDeadlineSeconds > 0:
		v.add("terminationGracePeriodSeconds", "must be less than activeDeadlineSeconds (%d >= %d)", g, t.ActiveDeadlineSeconds)
	}
	if msgs := content.IsDNS1123Subdomain(t.ServiceAccountName); len(msgs) > 0 {
		v.add("serviceAccountName", "%s", strings.Join(msgs, ", "))
	}
	for _, k := range sortedKeys(t.NodeSelector) {
		if msgs := content.IsLabelKey(k); len(msgs) > 0 {
			v.add("nodeSelector", "key %q: %s", k, strings.Join(msgs, ", "))
		}
		if msgs := content.IsLabelValue(t.NodeSelector[k]); len(msgs) > 0 {
			v.add("nodeSelector."+k, "%s", strings.Join(msgs, ", "))
		}
	}
	for i, tol := range t.Tolerations {
		checkToleration(&v, fmt.Sprintf("tolerations[%d]", i), tol)
	}
	checkAgent(&v, t.Agent)
	checkLimits(&v, t.Limits, t.Agent)
	checkArtifacts(&v, t.Artifacts)
	if len(t.PromptPreamble) > MaxPromptPreambleBytes {
		v.add("promptPreamble", "must be at most %d bytes (got %d)", MaxPromptPreambleBytes, len(t.PromptPreamble))
	}
	return v.err()
}

func checkName(v *ValidationError, field, name string) {
	if name == "" {
		v.add(field, "required")
		return
	}
	if msgs := content.IsDNS1123Label(name); len(msgs) > 0 {
		v.add(field, "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63): %q", name)
	}
}

func checkResources(v *ValidationError, r corev1.ResourceRequirements) {
	if len(r.Claims) > 0 {
		v.add("resources.claims", "not supported")
	}
	for _, part := range []struct {
		field string
		list  corev1.ResourceList
	}{{"resources.limits", r.Limits}, {"resources.requests", r.Requests}} {
		for _, name := range sortedKeys(part.list) {
			q := part.list[name]
			if q.Sign() < 0 {
				v.add(part.field+"."+string(name), "must not be negative (got %s)", q.String())
			}
		}
	}
	for _, name := range sortedKeys(r.Requests) {
		lim, ok := r.Limits[name]
		if req := r.Requests[name]; ok && req.Cmp(lim) > 0 {
			v.add("resources.requests."+string(name), "must not exceed its limit (%s > %s)", req.String(), lim.String())
		}
	}
}

func checkToleration(v *ValidationError, field string, t corev1.Toleration) {
	if t.Key != "" {
		if msgs := content.IsLabelKey(t.Key); len(msgs) > 0 {
			v.add(field+".key", "%s", strings.Join(msgs, ", "))
		}
	}
	switch t.Operator {
	case corev1.TolerationOpExists:
		if t.Value != "" {
			v.add(field+".value", "must be empty when operator is Exists")
		}
	case corev1.TolerationOpEqual, "":
		if t.Key == "" {
			v.add(field+".operator", "must be Exists when key is empty")
		}
		if msgs := content.IsLabelValue(t.Value); len(msgs) > 0 {
			v.add(field+".value", "%s", strings.Join(msgs, ", "))
		}
	default:
		v.add(field+".operator", "must be Exists or Equal (got %q)", t.Operator)
	}
	switch t.Effect {
	case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
	default:
		v.add(field+".effect", "must be NoSchedule, PreferNoSchedule or NoExecute (got %q)", t.Effect)
	}
	if t.TolerationSeconds != nil && t.Effect != corev1.TaintEffectNoExecute {
		v.add(field+".tolerationSeconds", "only allowed with effect NoExecute")
	}
}

func checkLimits(v *ValidationError, l Limits, a Agent) {
	if l.MaxTurns < a.MaxTurns || l.MaxTurns > MaxMaxTurns {
		v.add("limits.maxTurns", "must be between agent.maxTurns (%d) and %d (got %d)", a.MaxTurns, MaxMaxTurns, l.MaxTurns)
	}
	for _, c := range []struct {
		field string
		usd   float64
	}{{"limits.maxBudgetUSD", l.MaxBudgetUSD}, {"limits.monthlyBudgetUSD", l.MonthlyBudgetUSD}} {
		field, usd := c.field, c.usd
		if usd < 0 || math.IsNaN(usd) || math.IsInf(usd, 0) {
			v.add(field, "must be a positive amount of US dollars, or 0 for no cap (got %v)", usd)
		}
	}
	if a.MaxBudgetUSD > 0 && (l.MaxBudgetUSD < a.MaxBudgetUSD) {
		v.add("limits.maxBudgetUSD", "must be at least agent.maxBudgetUSD (%v), got %v", a.MaxBudgetUSD, l.MaxBudgetUSD)
	}
}

func checkAgent(v *ValidationError, a Agent) {
	if !slices.Contains(Adapters, a.Adapter) {
		v.add("agent.adapter", "must be one of %s (got %q)", strings.Join(Adapters, ", "), a.Adapter)
	}
	if a.Model != "" && !modelName.MatchString(a.Model) {
		v.add("agent.model", "must be a model name like claude-sonnet-4-5 (got %q)", a.Model)
	}
	if a.MaxTurns < 1 || a.MaxTurns > MaxMaxTurns {
		v.add("agent.maxTurns", "must be between 1 and %d (got %d)", MaxMaxTurns, a.MaxTurns)
	}
	if a.MaxBudgetUSD < 0 || math.IsNaN(a.MaxBudgetUSD) || math.IsInf(a.MaxBudgetUSD, 0) {
		v.add("agent.maxBudgetUSD", "must be a positive amount of US dollars, or 0 for no cap (got %v)", a.MaxBudgetUSD)
	}
	switch mode := a.PermissionMode; {
	case slices.Contains(PermissionModes, mode):
	case strings.EqualFold(mode, "bypassPermissions") || strings.Contains(strings.ToLower(mode), "skip"):
		v.add("agent.permissionMode", "%q is never allowed: the agent always runs with permission checks; must be one of %s", mode, strings.Join(PermissionModes, ", "))
	default:
		v.add("agent.permissionMode", "must be one of %s (got %q)", strings.Join(PermissionModes, ", "), mode)
	}
	switch acceptEdits := a.PermissionMode == PermissionAcceptEdits; {
	case acceptEdits && !a.AcceptEditsFilesystemCommands:
		v.add("agent.permissionMode", "acceptEdits also lets the agent run %s in the workdir without a Bash rule; "+
			"set agent.acceptEditsFilesystemCommands: true to accept that, or use default with Edit and Write allowed",
			strings.Join(AcceptEditsCommands, ", "))
	case !acceptEdits && a.AcceptEditsFilesystemCommands:
		v.add("agent.acceptEditsFilesystemCommands", "only with permissionMode acceptEdits (got %q)", a.PermissionMode)
	}
	if len(a.AllowedTools) == 0 {
		v.add("agent.allowedTools", "must not be empty")
	}
	for i, tool := range a.AllowedTools {
		if err := checkAllowedTool(tool); err != nil {
			v.add(fmt.Sprintf("agent.allowedTools[%d]", i), "%v", err)
		}
	}
	for i, tool := range a.DisallowedTools {
		if _, _, err := parseKnownTool(tool); err != nil {
			v.add(fmt.Sprintf("agent.disallowedTools[%d]", i), "%v", err)
		}
	}
	for _, d := range RequiredDisallowedTools {
		if !slices.Contains(a.DisallowedTools, d) {
			v.add("agent.disallowedTools", "must include %q: commit and push are the runner's job", d)
		}
	}
}

// parseTool splits "Name" or "Name(pattern)".
func parseTool(s string) (name, pattern string, err error) {
	m := toolSpec.FindStringSubmatch(s)
	if m == nil || len(s) > 256 {
		return "", "", fmt.Errorf("must be a tool name or Tool(pattern), e.g. Read or Bash(go test:*) (got %q)", s)
	}
	name, pattern = m[1], m[2]
	if strings.Contains(s, "(") && strings.TrimSpace(pattern) == "" {
		return "", "", fmt.Errorf("%q: pattern must not be empty", s)
	}
	if strings.ContainsAny(pattern, "\n\r\x00") {
		return "", "", fmt.Errorf("%q: pattern must be one line", s)
	}
	return name, pattern, nil
}

// parseKnownTool is parseTool for a tool that Claude Code ClaudeCodeVersion
// has, or an MCP tool: the CLI silently ignores a rule naming any other.
func parseKnownTool(s string) (name, pattern string, err error) {
	name, pattern, err = parseTool(s)
	if err != nil || strings.HasPrefix(name, mcpToolPrefix) || slices.Contains(ClaudeCode2_1_328Tools, name) {
		return name, pattern, err
	}
	hint := ""
	if i := slices.IndexFunc(ClaudeCode2_1_328Tools, func(k string) bool { return strings.EqualFold(k, name) }); i >= 0 {
		hint = fmt.Sprintf(", did you mean %q?", ClaudeCode2_1_328Tools[i])
	}
	return "", "", fmt.Errorf("unknown tool %q%s (Claude Code %s has: %s; MCP tools are mcp__server__tool)",
		name, hint, ClaudeCodeVersion, strings.Join(ClaudeCode2_1_328Tools, ", "))
}

// errBash is the reason a Bash entry is refused.
var errBash = errors.New(`Bash must name a command, e.g. Bash(go test:*)`)

func checkAllowedTool(s string) error {
	name, pattern, err := parseKnownTool(s)
	if err != nil {
		return err
	}
	if name != "Bash" {
		return nil
	}
	if pattern == "" {
		return fmt.Errorf("%q: %w; bare Bash would allow any command", s, errBash)
	}
	cmd := strings.TrimSpace(strings.TrimSuffix(strings.TrimSuffix(pattern, "*"), ":"))
	fields := strings.Fields(cmd)
	if len(fields) == 0 || strings.ContainsAny(fields[0], "*?") {
		return fmt.Errorf("%q: %w; a wildcard command allows anything", s, errBash)
	}
	if strings.ContainsAny(cmd, ";&|`$<>") {
		return fmt.Errorf("%q: pattern must be a plain command prefix, without shell operators", s)
	}
	prog := path.Base(fields[0])
	if slices.Contains(shellLikes, prog) {
		return fmt.Errorf("%q: %s can run any command; allow the commands themselves", s, prog)
	}
	if prog == "git" {
		if len(fields) == 1 || strings.HasPrefix(fields[1], "-") {
			return fmt.Errorf("%q: must name a git subcommand (commit and push are the runner's job)", s)
		}
		switch strings.TrimSuffix(fields[1], ":") {
		case "commit", "push":
			return fmt.Errorf("%q: commit and push are the runner's job, never the agent's", s)
		}
	}
	return nil
}

func checkArtifacts(v *ValidationError, a Artifacts) {
	for i, g := range a.Globs {
		field := fmt.Sprintf("artifacts.globs[%d]", i)
		switch {
		case g == "":
			v.add(field, "must not be empty")
		case path.IsAbs(g) || g != path.Clean(g) || g == ".." || strings.HasPrefix(g, "../"):
			v.add(field, "must be a clean path relative to the workdir, without .. (got %q)", g)
		default:
			if _, err := path.Match(g, ""); err != nil {
				v.add(field, "bad pattern %q: %v", g, err)
			}
		}
	}
	switch {
	case a.MaxBytes < 0 || a.MaxBytes > MaxArtifactBytesLimit:
		v.add("artifacts.maxBytes", "must be between 1 and %d (got %d)", MaxArtifactBytesLimit, a.MaxBytes)
	case a.MaxBytes == 0 && len(a.Globs) > 0:
		v.add("artifacts.maxBytes", "required when artifacts.globs is set")
	}
}

func sortedKeys[M ~map[K]V, K ~string, V any](m M) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
