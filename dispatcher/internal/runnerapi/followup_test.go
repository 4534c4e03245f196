package runnerapi_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/runnerapi"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// launched gives build id a runner token and marks it running, as a launch does.
func (e *env) launched(id string) {
	e.t.Helper()
	ctx := context.Background()
	tok, hash := auth.NewToken()
	require.NoError(e.t, store.SetRunnerTokenHash(ctx, e.pool.Pool, id, hash))
	_, err := store.TransitionBuild(ctx, e.pool.Pool, id, store.Transition{To: schema.StatusRunning, JobName: "j"})
	require.NoError(e.t, err)
	e.tokens[id] = tok
}

// A follow-up's task tells its runner of the parent: the session to resume,
// the prompt and output cut to FollowupContextBytes on a rune boundary, the
// follow-up's fallback and the parent's kept work.
func TestFollowupTask(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	p, err := e.app.Intake.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "web", PodName: "web-0"})
	require.NoError(t, err)
	// "é" is two bytes: a cut at an odd byte count would split one.
	prompt := "a" + strings.Repeat("é", schema.FollowupContextBytes)
	output := strings.Repeat("ü", schema.FollowupContextBytes) + "the end"
	parent, err := e.app.Intake.SubmitBuild(ctx, e.admin, p, schema.BuildSpec{Prompt: prompt}, "")
	require.NoError(t, err)
	e.launched(parent.Build.ID)
	var plain schema.RunnerTask
	require.Equal(t, 200, e.call("GET", schema.RunnerAPIPrefix+parent.Build.ID, e.tokens[parent.Build.ID], nil, &plain))
	assert.Nil(t, plain.Followup, "a build that follows nothing")

	_, err = e.app.Lifecycle.Finish(ctx, parent.Build.ID, schema.BuildResult{Output: output, Error: "spent $2.01 of $2",
		Reason: schema.ReasonBudgetExceeded, SessionID: "780a0839-aaaa", PartialBranch: schema.KeptWorkBranch(parent.Build.ID),
		PartialCommitSHA: "9f1c2d", PartialPushed: true}, "test")
	require.NoError(t, err)

	fu, err := e.app.Intake.SubmitFollowup(ctx, e.admin, parent.Build.ID,
		schema.BuildSpec{Prompt: "go on", Fallback: schema.FallbackFresh}, "")
	require.NoError(t, err)
	e.launched(fu.Build.ID)
	var task schema.RunnerTask
	require.Equal(t, 200, e.call("GET", schema.RunnerAPIPrefix+fu.Build.ID, e.tokens[fu.Build.ID], nil, &task))
	require.NotNil(t, task.Followup)
	f := *task.Followup
	assert.Equal(t, parent.Build.ID, f.ParentID)
	assert.Equal(t, "780a0839-aaaa", f.SessionID)
	assert.Equal(t, schema.FallbackFresh, f.Fallback)
	assert.Equal(t, schema.KeptWorkBranch(parent.Build.ID), f.PartialBranch)
	assert.Equal(t, "9f1c2d", f.PartialCommitSHA)
	for name, c := range map[string]struct{ got, full string }{"prompt": {f.ParentPrompt, prompt}, "output": {f.ParentOutput, output}} {
		assert.True(t, utf8.ValidString(c.got), name)
		assert.LessOrEqual(t, len(c.got), schema.FollowupContextBytes, name)
		assert.Greater(t, len(c.got), schema.FollowupContextBytes-utf8.UTFMax, "%s: cut no shorter than a rune", name)
		assert.True(t, strings.HasPrefix(c.full, c.got), "%s: the beginning is kept", name)
	}
	assert.Equal(t, "go on", task.Spec.Prompt, "the follow-up's own spec")

	// The follow-up's follow-up is told of the follow-up (which kept nothing).
	_, err = e.app.Lifecycle.Finish(ctx, fu.Build.ID, schema.BuildResult{Success: true, Output: "done", SessionID: "s-2"}, "test")
	require.NoError(t, err)
	fu2, err := e.app.Intake.SubmitFollowup(ctx, e.admin, fu.Build.ID, schema.BuildSpec{Prompt: "more"}, "")
	require.NoError(t, err)
	e.launched(fu2.Build.ID)
	var task2 schema.RunnerTask
	require.Equal(t, 200, e.call("GET", schema.RunnerAPIPrefix+fu2.Build.ID, e.tokens[fu2.Build.ID], nil, &task2))
	assert.Equal(t, &schema.FollowupTask{ParentID: fu.Build.ID, SessionID: "s-2", ParentPrompt: "go on", ParentOutput: "done"},
		task2.Followup)
}

func TestFollowupOf(t *testing.T) {
	t.Parallel()
	n := schema.FollowupContextBytes
	for name, c := range map[string]struct {
		in   string
		want int // bytes kept
	}{
		"short":                      {"hello", 5},
		"exactly the bound":          {strings.Repeat("a", n), n},
		"one over":                   {strings.Repeat("a", n+1), n},
		"a two-byte rune across":     {strings.Repeat("a", n-1) + "é", n - 1},
		"a four-byte rune across":    {strings.Repeat("a", n-2) + "😀", n - 2},
		"a four-byte rune that fits": {strings.Repeat("a", n-4) + "😀b", n},
		"empty":                      {"", 0},
	} {
		parent := &store.Build{Build: schema.Build{ID: "p", Spec: schema.BuildSpec{Prompt: c.in},
			Result: &schema.BuildResult{Output: c.in}}}
		f := runnerapi.FollowupOf(parent, schema.FallbackNone)
		assert.Len(t, f.ParentPrompt, c.want, name)
		assert.Equal(t, f.ParentPrompt, f.ParentOutput, name)
		assert.True(t, utf8.ValidString(f.ParentPrompt), name)
	}
	// Invalid UTF-8 (which the store never holds) is replaced, not passed on.
	f := runnerapi.FollowupOf(&store.Build{Build: schema.Build{Spec: schema.BuildSpec{Prompt: "a\xffb"}}}, schema.FallbackNone)
	assert.Equal(t, "a\uFFFDb", f.ParentPrompt)
	assert.Empty(t, f.ParentOutput, "a parent without a result")
	assert.Empty(t, f.SessionID)
}
