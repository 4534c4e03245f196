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
		{schema.InfoPayload{Message: "waiting for capacity: an older build of this project goes first",
			WaitingReason: schema.WaitingProjectBusy, QueuePosition: 2}, "waiting: project_busy, 2nd in the project's queue"},
		{schema.InfoPayload{Message: "x", WaitingReason: schema.WaitingCapacity, QueuePosition: 1}, "waiting: capacity, 1st in the project's queue"},
		{schema.InfoPayload{Message: "x", WaitingReason: schema.WaitingQuota, QueuePosition: 13}, "waiting: quota, 13th in the project's queue"},
		{schema.InfoPayload{Message: "x", WaitingReason: schema.WaitingProjectProvisioning}, "waiting: project_provisioning"},
		{schema.InfoPayload{Message: "a note with no reason"}, "a note with no reason"},
	} {
		in, err := schema.NewEventInput(time.Now(), c.p)
		require.NoError(t, err)
		require.Equal(t, c.want, summary(schema.Event{Type: in.Type, Payload: in.Payload}))
	}
}

func TestOrdinal(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 10: "10th", 11: "11th", 12: "12th",
		13: "13th", 21: "21st", 22: "22nd", 23: "23rd", 101: "101st", 111: "111th", 112: "112th"} {
		require.Equal(t, want, ordinal(n))
	}
}
