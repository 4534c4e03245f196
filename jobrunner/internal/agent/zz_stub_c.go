// TEMPORARY (helper C): stand-ins for helper B's agent API, so that the
// runner compiles before B's branch is merged. Delete this file at the
// merge and keep B's event.go and outcome.go (C added there only the fields
// Event.Retry, Event.Denial and Outcome.AgentPushed, each marked TEMPORARY).
// Then replace StubReasonAgentPushed with schema.ReasonAgentPushed and drop
// skipUntilB in jobrunner/internal/run: the compiler points at both.

package agent

import "github.com/kilnbuild/kiln/schema"

const (
	// KindRetry: the CLI retries an API request (system/api_retry).
	KindRetry Kind = "retry"
	// KindDenial: a tool call was denied (system/permission_denied).
	KindDenial Kind = "denial"
	// KindPushed: the agent itself pushed (system/vcs_state_changed, kind push).
	KindPushed Kind = "pushed"
)

// Retry is one api_retry line.
type Retry struct {
	Attempt, MaxRetries int
	DelayMS             int64
	Status              int
	Error               string
}

// Permanent reports an error no retry can mend (400, 401, 403).
func (r Retry) Permanent() bool { return r.Status == 400 || r.Status == 401 || r.Status == 403 }

// StubReasonAgentPushed stands in for schema.ReasonAgentPushed.
const StubReasonAgentPushed = schema.Reason("agent_pushed")

// StubbedByC is true while this stub is in place.
const StubbedByC = true
