package cli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

func TestSummaryOfAgentEvents(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p    schema.Payload
		want string
	}{
		{schema.AgentRetryPayload{Attempt: 2, MaxRetries: 10, DelayMS: 1141, Status: 529, Error: "overloaded"}, "API 529 (overloaded): retry 2 of 10 in 1.1s"},
		{schema.AgentRetryPayload{Attempt: 1, MaxRetries: 1, DelayMS: 617, Error: "unknown"}, "API no answer (unknown): retry 1 of 1 in 0.6s"},
		{schema.PermissionDeniedPayload{Tool: "Bash", Summary: "git push origin HEAD", Reason: "denied"}, "denied Bash git push origin HEAD"},
	} {
		in, err := schema.NewEventInput(time.Now(), c.p)
		require.NoError(t, err)
		require.Equal(t, c.want, summary(schema.Event{Type: in.Type, Payload: in.Payload}))
	}
}
