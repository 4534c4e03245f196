package intake

import (
	"context"
	"fmt"
	"strings"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// MaxBranchBytes bounds a BuildSpec's branch, as given ({task_id} unexpanded).
const MaxBranchBytes = 200

// validBranch reports whether b is a branch name git takes (the rules of
// git check-ref-format --branch that matter here): no space, control
// character or any of ~ ^ : ? * [ \, no "..", "@{" or "//", not "@", no
// component that starts with '.' or ends with ".lock", not starting with
// '-' or '/', not ending with '/' or '.'.
func validBranch(b string) bool {
	if b == "" || len(b) > 255 || b == "@" || strings.ContainsAny(b, " ~^:?*[\\") || hasControl(b) ||
		strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".") ||
		strings.Contains(b, "..") || strings.Contains(b, "@{") || strings.Contains(b, "//") {
		return false
	}
	for _, c := range strings.Split(b, "/") {
		if strings.HasPrefix(c, ".") || strings.HasSuffix(c, ".lock") {
			return false
		}
	}
	return true
}

// branchProbeID stands for a build id when a branch's {task_id} is checked:
// an id has the same characters (hex digits and '-').
const branchProbeID = "00000000-0000-7000-8000-000000000000"

// checkBranch returns the rule a BuildSpec's branch breaks, or "". The
// project's own branch is checked at submission (checkProjectBranch).
func checkBranch(raw string) string {
	resolved := strings.ReplaceAll(raw, schema.TaskIDPlaceholder, branchProbeID)
	switch {
	case hasNUL(raw):
		return ruleNUL
	case len(raw) > MaxBranchBytes:
		return fmt.Sprintf("must be at most %d bytes (got %d)", MaxBranchBytes, len(raw))
	case !validBranch(resolved):
		return "must be a valid git branch name (" + schema.TaskIDPlaceholder + " may be used in it)"
	case strings.HasPrefix(resolved, schema.KeptWorkBranchPrefix):
		return "must not start with " + schema.KeptWorkBranchPrefix + ": those branches keep the work of failed and cancelled builds"
	case resolved == "HEAD":
		return "must not be HEAD"
	}
	return ""
}

// checkProjectBranch refuses a review branch that is the project's own
// branch: a review branch leaves the project branch untouched. It reads the
// project only when the spec names a branch and p does not carry its
// git_branch.
func (s *Service) checkProjectBranch(ctx context.Context, p *schema.Project, spec schema.BuildSpec) error {
	if spec.Branch == "" || strings.Contains(spec.Branch, schema.TaskIDPlaceholder) {
		return nil // a branch with the build's id in it is never the project's
	}
	branch := p.GitBranch
	if branch == "" {
		full, err := store.GetProjectTarget(ctx, s.Store.Pool, p.ID)
		if err != nil {
			return err
		}
		branch = full.GitBranch
	}
	if rule := projectBranchRule(spec, branch); rule != "" {
		return ValidationError{{Field: "branch", Rule: rule}}
	}
	return nil
}

// projectBranchRule is the rule a spec's review branch breaks when it is
// projectBranch, or "".
func projectBranchRule(spec schema.BuildSpec, projectBranch string) string {
	if spec.Branch != "" && spec.Branch == projectBranch {
		return fmt.Sprintf("must not be the project's branch (%s): a review branch leaves it untouched", projectBranch)
	}
	return ""
}
