package api_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// TestAgentFailureMatchesSpec: a build the agent's API failed, with its
// retry and denial events and a result listing denials and the session id,
// is answered as schema/openapi.yaml says (e.do checks every answer).
func TestAgentFailureMatchesSpec(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	p := e.project("web")
	r := e.submit(p.ID, e.admin, map[string]any{"prompt": "fix the heading"})
	require.Equal(t, 202, r.Status, "%s", r.Body)
	var acc schema.BuildAccepted
	r.decode(t, &acc)
	_, err := store.TransitionBuild(ctx, e.db.Pool, acc.TaskID, store.Transition{To: schema.StatusRunning, JobName: "kiln-x"})
	require.NoError(t, err)
	for _, pl := range []schema.Payload{
		schema.LogPayload{Level: schema.LogInfo, Message: "agent session started", SessionID: "s1", Model: "claude-opus-5-5",
			AgentVersion: "2.1.328", PermissionMode: "default", Tools: []string{"Bash", "Read"}},
		schema.PermissionDeniedPayload{ToolUseID: "toolu_1", Tool: "Bash", Summary: "git push origin HEAD", Reason: "denied"},
		schema.AgentRetryPayload{Attempt: 1, MaxRetries: 10, DelayMS: 503, Status: 401, Error: "authentication_failed"},
	} {
		_, err := store.AppendEvent(ctx, e.db.Pool, acc.TaskID, pl.EventType(), pl)
		require.NoError(t, err)
	}
	msg := "agent could not use the API: 401 authentication_failed (after 1 retry)"
	_, err = store.TransitionBuild(ctx, e.db.Pool, acc.TaskID, store.Transition{To: schema.StatusFailed,
		Reason: schema.ReasonAgentAuth, Error: msg,
		Result: &schema.BuildResult{Reason: schema.ReasonAgentAuth, Error: msg, SessionID: "s1",
			PermissionDenials: []schema.PermissionDenial{{Tool: "Bash", Summary: "git push origin HEAD"}}}})
	require.NoError(t, err)

	r = e.do("GET", "/builds/"+acc.TaskID, e.admin, nil)
	require.Equal(t, 200, r.Status, "%s", r.Body)
	var b schema.Build
	r.decode(t, &b)
	assert.Equal(t, schema.ReasonAgentAuth, b.Reason)
	require.NotNil(t, b.Result)
	assert.Equal(t, []schema.PermissionDenial{{Tool: "Bash", Summary: "git push origin HEAD"}}, b.Result.PermissionDenials)
	assert.Equal(t, "s1", b.Result.SessionID)

	r = e.do("GET", "/builds/"+acc.TaskID+"/events", e.admin, nil)
	require.Equal(t, 200, r.Status, "%s", r.Body)
	assert.Contains(t, string(r.Body), `"type":"agent_retry"`)
	assert.Contains(t, string(r.Body), `"type":"permission_denied"`)
}
