package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// TestRecordedOutcomes reads every transcript recorded from the pinned CLI
// (make record-fixtures) and checks the outcome Kiln reports for it: the
// typed reason, the API's status and message in the error, denials, usage.
func TestRecordedOutcomes(t *testing.T) {
	t.Parallel()
	type denial struct{ tool, summary string }
	tests := []struct {
		file      string
		success   bool
		reason    schema.Reason
		apiStatus int
		errHas    []string
		denials   []denial
		pushed    bool
		turns     int
		minTokens int64 // input tokens at least
	}{
		{file: "success-edit", success: true, turns: 3, minTokens: 1},
		{file: "new-file", success: true, turns: 2, minTokens: 1},
		{file: "big-tool-result", success: true, turns: 2, minTokens: 1},
		{file: "denied-bash", success: true, turns: 3,
			denials: []denial{{"Bash", "npm install"}}},
		{file: "denied-push", success: true, turns: 3,
			denials: []denial{{"Bash", "git push origin main"}}},
		{file: "agent-pushed", reason: schema.ReasonAgentPushed, pushed: true, turns: 4,
			errHas: []string{`the agent pushed branch "main" itself`}},
		{file: "api-error", reason: schema.ReasonAgentAuth, apiStatus: 401, turns: 1,
			errHas: []string{"401 authentication_error", "Invalid API key"}},
		{file: "api-401", reason: schema.ReasonAgentAuth, apiStatus: 401, turns: 1,
			errHas: []string{"401 authentication_error", "(after 2 retries)"}},
		{file: "api-403", reason: schema.ReasonAgentAuth, apiStatus: 403, turns: 1,
			errHas: []string{"403 permission_error"}},
		{file: "api-400", reason: schema.ReasonAgentBadRequest, apiStatus: 400, turns: 1,
			errHas: []string{"400 invalid_request_error"}},
		{file: "prompt-too-long", reason: schema.ReasonAgentBadRequest, apiStatus: 400, turns: 1,
			errHas: []string{"Prompt is too long"}},
		{file: "api-500", reason: schema.ReasonAgentUnavailable, apiStatus: 500, turns: 1,
			errHas: []string{"500 api_error", "(after 2 retries)"}},
		{file: "api-529", reason: schema.ReasonAgentUnavailable, apiStatus: 529, turns: 1,
			errHas: []string{"529 overloaded_error", "(after 2 retries)"}},
		// Run with --max-turns 2: the CLI says num_turns 3, Kiln names the configured limit.
		{file: "max-turns", reason: schema.ReasonMaxTurns, turns: 3, minTokens: 1,
			errHas: []string{"maximum number of turns (2)"}, denials: []denial{{"Bash", "npm test"}}},
		// --max-budget-usd 0.05, a first turn priced at $0.12: stopped after it.
		{file: "max-budget", reason: schema.ReasonBudgetExceeded, turns: 1, minTokens: 20000,
			errHas: []string{"the agent was stopped by the build's budget of $0.05 after spending $0.12 in 1 turn"}},
		// SIGTERM mid-run: no result line; the tokens of the turn made are still counted.
		{file: "cancelled", reason: schema.ReasonAgentError, turns: 1, minTokens: 1,
			errHas: []string{NoResultMessage}},
	}
	files, err := filepath.Glob(filepath.Join(fixtures, "*.jsonl"))
	require.NoError(t, err)
	require.Len(t, files, len(tests), "every recorded transcript has a case here")
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(filepath.Join(fixtures, tt.file+".jsonl"))
			require.NoError(t, err)
			o := Summarize(parseAll(t, b))
			require.Equal(t, tt.success, o.Success, o.Error)
			require.Equal(t, tt.reason, o.Reason)
			require.Equal(t, tt.apiStatus, o.APIStatus)
			require.Equal(t, tt.pushed, o.AgentPushed)
			require.Equal(t, tt.turns, o.Turns)
			require.GreaterOrEqual(t, o.InputTokens, tt.minTokens)
			require.NotEmpty(t, o.SessionID)
			if tt.success {
				require.Empty(t, o.Error)
			}
			for _, s := range tt.errHas {
				require.Contains(t, o.Error, s)
			}
			var got []denial
			for _, d := range o.PermissionDenials {
				got = append(got, denial{d.ToolName, d.Summary()})
				require.NotEmpty(t, d.Reason)
			}
			require.Equal(t, tt.denials, got)

			var r schema.BuildResult
			o.Apply(&r)
			require.Equal(t, tt.reason, r.Reason)
			require.Len(t, r.PermissionDenials, len(tt.denials))
		})
	}
}
