package intake

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// Limits on a BuildSpec.
const (
	MaxPromptBytes    = 256 << 10
	MaxVariables      = 64
	MaxVariableBytes  = 64 << 10
	MaxCallbackURLLen = 2048
)

// FieldError names a field and the rule it breaks.
type FieldError struct {
	Field string `json:"field"`
	Rule  string `json:"rule"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Rule }

// ValidationError is every rule a request breaks.
type ValidationError []FieldError

func (v ValidationError) Error() string {
	parts := make([]string, len(v))
	for i, e := range v {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func (v *ValidationError) add(field, rule string, args ...any) {
	*v = append(*v, FieldError{Field: field, Rule: fmt.Sprintf(rule, args...)})
}

func (v ValidationError) err() error {
	if len(v) == 0 {
		return nil
	}
	return v
}

var variableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// TemplateSet is the part of the template catalog validation needs
// (*jobtemplates.Catalog): the names, and a template's limits.
type TemplateSet interface {
	Names() []string
	Get(name string) (*jobtemplates.Template, bool)
}

// ruleNUL is broken by text that holds U+0000, which Postgres cannot store.
const ruleNUL = "must not contain NUL (U+0000)"

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// ValidateSpec checks the BuildSpec of a build (not a follow-up); prefix
// names the enclosing field ("" or "build."). Besides the fields' own rules:
// max_turns and max_budget_usd within the template's limits (BuildLimits),
// branch a review branch name (checkBranch), and no fallback, which is for
// follow-ups only.
func ValidateSpec(s *schema.BuildSpec, templates TemplateSet, prefix string) error {
	return validateSpec(s, templates, prefix, false)
}

// ValidateFollowup checks the BuildSpec of a follow-up (POST
// /builds/{taskId}/followups): ValidateSpec's rules, and fallback "" or "fresh".
func ValidateFollowup(s *schema.BuildSpec, templates TemplateSet) error {
	return validateSpec(s, templates, "", true)
}

// ruleFallbackBuild is broken by a build (not a follow-up) that gives a fallback.
const ruleFallbackBuild = "only for follow-ups (POST /builds/{taskId}/followups)"

func validateSpec(s *schema.BuildSpec, templates TemplateSet, prefix string, followup bool) error {
	var v ValidationError
	switch {
	case hasNUL(s.Prompt):
		v.add(prefix+"prompt", ruleNUL)
	case strings.TrimSpace(s.Prompt) == "":
		v.add(prefix+"prompt", "required")
	case len(s.Prompt) > MaxPromptBytes:
		v.add(prefix+"prompt", "must be at most %d bytes (got %d)", MaxPromptBytes, len(s.Prompt))
	}
	if hasNUL(s.Template) {
		v.add(prefix+"template", ruleNUL)
	} else if t, ok := templates.Get(s.TemplateName()); !ok {
		v.add(prefix+"template", "unknown template %q; known: %s", s.TemplateName(), strings.Join(templates.Names(), ", "))
	} else if _, err := t.BuildLimits(*s); err != nil {
		var le *jobtemplates.LimitError
		if !errors.As(err, &le) {
			return fmt.Errorf("resolving the limits of template %s: %w", t.Name, err)
		}
		v.add(prefix+le.Field, "%s", le.Rule)
	}
	if s.Branch != "" {
		if rule := checkBranch(s.Branch); rule != "" {
			v.add(prefix+"branch", "%s", rule)
		}
	}
	switch {
	case !followup && s.Fallback != schema.FallbackNone:
		v.add(prefix+"fallback", ruleFallbackBuild)
	case followup && s.Fallback != schema.FallbackNone && s.Fallback != schema.FallbackFresh:
		v.add(prefix+"fallback", "must be %q or absent (got %q)", schema.FallbackFresh, s.Fallback)
	}
	if len(s.Variables) > MaxVariables {
		v.add(prefix+"variables", "must have at most %d keys (got %d)", MaxVariables, len(s.Variables))
	}
	keys := make([]string, 0, len(s.Variables))
	for k := range s.Variables {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if hasNUL(k) {
			v.add(prefix+"variables", "keys "+ruleNUL)
		} else if !variableName.MatchString(k) {
			v.add(prefix+"variables", "key %q must match %s", k, variableName)
		} else if len(s.Variables[k]) > MaxVariableBytes {
			v.add(prefix+"variables."+k, "must be at most %d bytes", MaxVariableBytes)
		} else if hasNUL(s.Variables[k]) {
			v.add(prefix+"variables."+k, ruleNUL)
		}
	}
	if s.CallbackURL != "" {
		if rule := checkCallbackURL(s.CallbackURL); rule != "" {
			v.add(prefix+"callback_url", "%s", rule)
		}
	}
	return v.err()
}

// rulePort is broken by a callback URL whose port no connection can use.
const rulePort = "the port must be a number from 1 to 65535"

func checkCallbackURL(raw string) string {
	if len(raw) > MaxCallbackURLLen {
		return fmt.Sprintf("must be at most %d characters", MaxCallbackURLLen)
	}
	if hasNUL(raw) {
		return ruleNUL
	}
	u, err := url.Parse(raw)
	if err != nil && strings.Contains(err.Error(), "invalid port") {
		return rulePort
	}
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return "must be an absolute http(s) URL"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return rulePort
		}
	}
	if u.User != nil {
		return "must not carry credentials"
	}
	if u.Fragment != "" {
		return "must not have a fragment"
	}
	return ""
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// NormalizeProject fills defaults into a bring-your-own-pod project's input
// and checks it, returning the project to create. A managed project's input
// (with repository) is refused: only a Service with Workspaces takes it.
func NormalizeProject(in schema.ProjectInput, prefix string) (*schema.Project, error) {
	p, _, err := normalizeProject(in, prefix, nil)
	return p, err
}

// normalizeProject is NormalizeProject that, given the workspace defaults,
// also takes a managed project's input and returns what is stored of it.
func normalizeProject(in schema.ProjectInput, prefix string, d *WorkspaceDefaults) (*schema.Project, *store.Managed, error) {
	var v ValidationError
	nul := false
	for _, f := range []struct{ name, value string }{
		{"name", in.Name}, {"namespace", in.Namespace}, {"pod_name", in.PodName}, {"pod_selector", in.PodSelector},
		{"container", in.Container}, {"workdir", in.Workdir}, {"git_remote", in.GitRemote}, {"git_branch", in.GitBranch},
		{"commit_author_name", in.AuthorName}, {"commit_author_email", in.AuthorEmail},
	} {
		if hasNUL(f.value) {
			v.add(prefix+f.name, ruleNUL)
			nul = true
		}
	}
	if nul { // the other rules would only repeat it
		return nil, nil, v.err()
	}
	if in.Name == "" {
		v.add(prefix+"name", "required")
	} else if !dnsLabel.MatchString(in.Name) {
		v.add(prefix+"name", "must be a DNS label: lowercase letters, digits and '-', at most 63 characters")
	}
	p := &schema.Project{
		Name:          in.Name,
		Namespace:     orDefault(in.Namespace, "default"),
		PodName:       in.PodName,
		PodSelector:   in.PodSelector,
		Container:     in.Container,
		Workdir:       orDefault(in.Workdir, "/workspace"),
		GitRemote:     orDefault(in.GitRemote, "origin"),
		GitBranch:     orDefault(in.GitBranch, "main"),
		AuthorName:    orDefault(in.AuthorName, "Kiln"),
		AuthorEmail:   orDefault(in.AuthorEmail, "kiln@localhost"),
		MaxConcurrent: in.MaxConcurrent,
	}
	if p.MaxConcurrent == 0 {
		p.MaxConcurrent = 1
	}
	var m *store.Managed
	if in.Repository != nil {
		m = normalizeManaged(in, p, d, prefix, &v)
	} else if in.Workspace != nil || len(in.Addons) > 0 {
		v.add(prefix+"repository", "required with workspace or addons: they are for managed projects")
	}
	if !dnsLabel.MatchString(p.Namespace) {
		v.add(prefix+"namespace", "must be a DNS label")
	}
	if p.PodName != "" && p.PodSelector != "" {
		v.add(prefix+"pod_selector", "give pod_name or pod_selector, not both")
	}
	if !strings.HasPrefix(p.Workdir, "/") {
		v.add(prefix+"workdir", "must be an absolute path")
	}
	if p.MaxConcurrent < 0 || p.MaxConcurrent > 100 {
		v.add(prefix+"max_concurrent", "must be between 1 and 100")
	}
	if strings.ContainsAny(p.GitBranch, " ~^:?*[\\") || strings.HasPrefix(p.GitBranch, "-") {
		v.add(prefix+"git_branch", "must be a valid git branch name")
	}
	if strings.HasPrefix(p.GitRemote, "-") {
		v.add(prefix+"git_remote", "must not start with '-'")
	}
	if !strings.Contains(p.AuthorEmail, "@") {
		v.add(prefix+"commit_author_email", "must be an email address")
	}
	if err := v.err(); err != nil {
		return nil, nil, err
	}
	return p, m, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
