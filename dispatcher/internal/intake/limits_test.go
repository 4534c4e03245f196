package intake_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// tightCatalog is the embedded catalog plus "tight": at most 10 turns and
// $2 a build, $30 a month.
func tightCatalog(t *testing.T) *jobtemplates.Catalog {
	t.Helper()
	c, err := jobtemplates.Load(fstest.MapFS{"tight.yaml": {Data: []byte(`
agent:
  maxTurns: 5
  maxBudgetUSD: 1
  allowedTools: [Read]
limits:
  maxTurns: 10
  maxBudgetUSD: 2
  monthlyBudgetUSD: 30
`)}})
	require.NoError(t, err)
	return jobtemplates.Embedded().Merge(c)
}

func ptr[T any](v T) *T { return &v }

// ValidateSpec and ValidateFollowup: the template's limits on max_turns and
// max_budget_usd, the review branch's rules and the fallback's, each
// refusal naming the field and the rule (the cap, for a limit).
func TestValidateSpecLimitsBranchFallback(t *testing.T) {
	t.Parallel()
	catalog := tightCatalog(t)
	cases := []struct {
		name     string
		spec     schema.BuildSpec
		followup bool
		field    string // "" : valid
		rule     string // in the rule
	}{
		{"no limits asked", schema.BuildSpec{Prompt: "x"}, false, "", ""},
		{"turns at the cap", schema.BuildSpec{Prompt: "x", Template: "tight", MaxTurns: ptr(10)}, false, "", ""},
		{"turns over the cap", schema.BuildSpec{Prompt: "x", Template: "tight", MaxTurns: ptr(11)}, false,
			"max_turns", "must be at most 10, template tight's limits.maxTurns (got 11)"},
		{"turns zero", schema.BuildSpec{Prompt: "x", MaxTurns: ptr(0)}, false, "max_turns", "must be at least 1"},
		{"default template's turn cap", schema.BuildSpec{Prompt: "x", MaxTurns: ptr(201)}, false,
			"max_turns", "must be at most 200, template default's limits.maxTurns"},
		{"budget at the cap", schema.BuildSpec{Prompt: "x", Template: "tight", MaxBudgetUSD: ptr(2.0)}, false, "", ""},
		{"budget over the cap", schema.BuildSpec{Prompt: "x", Template: "tight", MaxBudgetUSD: ptr(2.5)}, false,
			"max_budget_usd", "must be at most 2, template tight's limits.maxBudgetUSD (got 2.5)"},
		{"budget negative", schema.BuildSpec{Prompt: "x", MaxBudgetUSD: ptr(-1.0)}, false,
			"max_budget_usd", "must be a positive amount"},
		{"budget zero", schema.BuildSpec{Prompt: "x", MaxBudgetUSD: ptr(0.0)}, false, "max_budget_usd", "must be a positive amount"},
		{"review branch", schema.BuildSpec{Prompt: "x", Branch: "review/fix-heading"}, false, "", ""},
		{"review branch with the task id", schema.BuildSpec{Prompt: "x", Branch: "bot/{task_id}"}, false, "", ""},
		{"branch under kiln/", schema.BuildSpec{Prompt: "x", Branch: "kiln/mine"}, false,
			"branch", "must not start with kiln/"},
		{"branch under kiln/ through the placeholder", schema.BuildSpec{Prompt: "x", Branch: "kiln/{task_id}"}, false,
			"branch", "must not start with kiln/"},
		{"branch of 201 bytes", schema.BuildSpec{Prompt: "x", Branch: "b/" + strings.Repeat("a", 199)}, false,
			"branch", "must be at most 200 bytes (got 201)"},
		{"branch of 200 bytes", schema.BuildSpec{Prompt: "x", Branch: "b/" + strings.Repeat("a", 198)}, false, "", ""},
		{"branch with a space", schema.BuildSpec{Prompt: "x", Branch: "my branch"}, false, "branch", "must be a valid git branch name"},
		{"branch with ..", schema.BuildSpec{Prompt: "x", Branch: "a..b"}, false, "branch", "must be a valid git branch name"},
		{"branch with @{", schema.BuildSpec{Prompt: "x", Branch: "a@{1}"}, false, "branch", "must be a valid git branch name"},
		{"branch ending .lock", schema.BuildSpec{Prompt: "x", Branch: "a/b.lock"}, false, "branch", "must be a valid git branch name"},
		{"branch component starting .", schema.BuildSpec{Prompt: "x", Branch: "a/.b"}, false, "branch", "must be a valid git branch name"},
		{"branch starting -", schema.BuildSpec{Prompt: "x", Branch: "-b"}, false, "branch", "must be a valid git branch name"},
		{"branch with //", schema.BuildSpec{Prompt: "x", Branch: "a//b"}, false, "branch", "must be a valid git branch name"},
		{"branch HEAD", schema.BuildSpec{Prompt: "x", Branch: "HEAD"}, false, "branch", "must not be HEAD"},
		{"branch with NUL", schema.BuildSpec{Prompt: "x", Branch: "a\x00"}, false, "branch", "must not contain NUL"},
		{"fallback on a build", schema.BuildSpec{Prompt: "x", Fallback: schema.FallbackFresh}, false,
			"fallback", "only for follow-ups (POST /builds/{taskId}/followups)"},
		{"fallback fresh on a follow-up", schema.BuildSpec{Prompt: "x", Fallback: schema.FallbackFresh}, true, "", ""},
		{"no fallback on a follow-up", schema.BuildSpec{Prompt: "x"}, true, "", ""},
		{"unknown fallback on a follow-up", schema.BuildSpec{Prompt: "x", Fallback: "stale"}, true,
			"fallback", `must be "fresh" or absent (got "stale")`},
		{"follow-up limits too", schema.BuildSpec{Prompt: "x", Template: "tight", MaxTurns: ptr(11)}, true,
			"max_turns", "must be at most 10"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := c.spec
			var err error
			if c.followup {
				err = intake.ValidateFollowup(&spec, catalog)
			} else {
				err = intake.ValidateSpec(&spec, catalog, "")
			}
			if c.field == "" {
				assert.NoError(t, err)
				return
			}
			got := fields(t, err)
			require.Contains(t, got, c.field, "%v", err)
			assert.Contains(t, got[c.field], c.rule)
		})
	}
}

// The enclosing field's prefix names create-and-build's build fields.
func TestValidateSpecPrefixesLimitFields(t *testing.T) {
	t.Parallel()
	err := intake.ValidateSpec(&schema.BuildSpec{Prompt: "x", MaxTurns: ptr(1000), Fallback: schema.FallbackFresh,
		Branch: "kiln/x"}, jobtemplates.Embedded(), "build.")
	got := fields(t, err)
	assert.Contains(t, got, "build.max_turns")
	assert.Contains(t, got, "build.fallback")
	assert.Contains(t, got, "build.branch")
}
