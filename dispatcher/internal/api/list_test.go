package api_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// TestListReturnsSummaries: GET /projects/{id}/builds returns summaries of
// builds as large as a spec may be (a 256 KiB prompt, 64 KiB of variables):
// no prompt, variables, callback URL or output, the error cut short; GET
// /builds/{id} still has the whole build. e.do checks every answer against
// schema/openapi.yaml.
func TestListReturnsSummaries(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	ctx := context.Background()
	prompt := "PROMPT-MARK " + strings.Repeat("p", 256<<10-12)
	variable := "VAR-MARK " + strings.Repeat("v", 64<<10-9)
	big := e.submit(p.ID, e.admin, map[string]any{"prompt": prompt, "variables": map[string]string{"ctx": variable},
		"auto_commit": true, "callback_url": "https://bots.example/cb?CB-MARK"})
	require.Equal(t, 202, big.Status, "%s", big.Body)
	var bigAcc schema.BuildAccepted
	big.decode(t, &bigAcc)

	done := e.submit(p.ID, e.admin, map[string]any{"prompt": "ship it", "template": "default", "auto_commit": true, "auto_push": true})
	require.Equal(t, 202, done.Status, "%s", done.Body)
	var doneAcc schema.BuildAccepted
	done.decode(t, &doneAcc)
	_, err := store.TransitionBuild(ctx, e.db.Pool, doneAcc.TaskID, store.Transition{To: schema.StatusRunning, JobName: "kiln-x"})
	require.NoError(t, err)
	_, err = store.TransitionBuild(ctx, e.db.Pool, doneAcc.TaskID, store.Transition{To: schema.StatusCompleted,
		Result: &schema.BuildResult{Success: true, Output: "OUTPUT-MARK " + strings.Repeat("o", 200<<10), CommitSHA: "abc123",
			FilesChanged: []string{"FILE-MARK-a", "b", "c"}, DurationMS: 4200,
			Artifacts: []schema.Artifact{{Name: "report", Path: "out/report.txt", Size: 3, SHA256: "x"}}}})
	require.NoError(t, err)

	failed := e.submit(p.ID, e.admin, map[string]any{"prompt": "break it"})
	require.Equal(t, 202, failed.Status, "%s", failed.Body)
	var failedAcc schema.BuildAccepted
	failed.decode(t, &failedAcc)
	longError := strings.Repeat("é", 3000) // 2 bytes a character: the cut counts characters
	_, err = store.TransitionBuild(ctx, e.db.Pool, failedAcc.TaskID, store.Transition{To: schema.StatusFailed,
		Reason: schema.ReasonRunnerLost, Error: longError})
	require.NoError(t, err)

	r := e.do("GET", "/projects/"+p.ID+"/builds?limit=100", e.admin, nil)
	require.Equal(t, 200, r.Status, "%s", r.Body)
	for _, mark := range []string{"PROMPT-MARK", "VAR-MARK", "CB-MARK", "OUTPUT-MARK", "FILE-MARK", "out/report.txt", `"spec"`, `"prompt"`, `"variables"`} {
		assert.NotContains(t, string(r.Body), mark, "a list has no %s", mark)
	}
	assert.Less(t, len(r.Body), 8<<10, "three summaries are small, whatever their specs hold")
	var page struct {
		Builds     []schema.BuildSummary `json:"builds"`
		NextCursor string                `json:"next_cursor"`
	}
	r.decode(t, &page)
	require.Len(t, page.Builds, 3)
	assert.Empty(t, page.NextCursor)
	byID := map[string]schema.BuildSummary{}
	for _, b := range page.Builds {
		byID[b.ID] = b
		assert.Equal(t, p.ID, b.ProjectID)
		assert.Equal(t, "default", b.Template)
		assert.Equal(t, apptest.AdminName, b.RequestedBy)
		assert.False(t, b.CreatedAt.IsZero())
	}
	assert.Equal(t, failedAcc.TaskID, page.Builds[0].ID, "newest first")

	b := byID[bigAcc.TaskID]
	assert.Equal(t, schema.StatusPending, b.Status)
	assert.True(t, b.AutoCommit)
	assert.False(t, b.AutoPush)
	assert.True(t, b.HasCallback)
	assert.Nil(t, b.Result)
	assert.Empty(t, b.Error)

	d := byID[doneAcc.TaskID]
	assert.Equal(t, schema.StatusCompleted, d.Status)
	assert.True(t, d.AutoPush)
	assert.False(t, d.HasCallback)
	assert.Equal(t, 1, d.Attempt)
	require.NotNil(t, d.StartedAt)
	require.NotNil(t, d.FinishedAt)
	assert.Equal(t, &schema.ResultSummary{Success: true, CommitSHA: "abc123", FilesChangedCount: 3, ArtifactCount: 1, DurationMS: 4200}, d.Result)

	f := byID[failedAcc.TaskID]
	assert.Equal(t, schema.StatusFailed, f.Status)
	assert.Equal(t, schema.ReasonRunnerLost, f.Reason)
	assert.Equal(t, schema.SummaryErrorChars, utf8.RuneCountInString(f.Error))
	assert.True(t, strings.HasSuffix(f.Error, "…"), "a cut error says so")
	assert.True(t, strings.HasPrefix(longError, strings.TrimSuffix(f.Error, "…")))

	// The build itself keeps everything.
	r = e.do("GET", "/builds/"+bigAcc.TaskID, e.admin, nil)
	require.Equal(t, 200, r.Status)
	var whole schema.Build
	r.decode(t, &whole)
	assert.Equal(t, prompt, whole.Spec.Prompt)
	assert.Equal(t, variable, whole.Spec.Variables["ctx"])
	r = e.do("GET", "/builds/"+failedAcc.TaskID, e.admin, nil)
	r.decode(t, &whole)
	assert.Equal(t, longError, whole.Error)
}
