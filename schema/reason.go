package schema

// Reason says why a build ended as it did. It is a typed code, stored with
// the build's audit row (builds.reason), returned by the API, carried by the
// status event and the callback payload, and used as the `reason` label of
// kiln_builds_total. Error text is for people; nothing parses it: whoever
// knows why a build failed says so with a Reason.
//
// A completed build has ReasonNone; a cancelled one ReasonCancelled; a failed
// one one of the others. The set is closed (Reasons lists it) so the metric
// label stays bounded; openapi.yaml declares it as an enum.
type Reason string

const (
	// ReasonNone is the reason of a completed build (and of a build that is not terminal).
	ReasonNone Reason = ""

	// ReasonCancelled: a user (or the API) cancelled the build.
	ReasonCancelled Reason = "cancelled"

	// Reasons the cluster gives (decided by the dispatcher's watcher).

	// ReasonDeadline: the Job's activeDeadlineSeconds passed, or the runner
	// stopped the agent at the build's deadline.
	ReasonDeadline Reason = "deadline"
	// ReasonOOM: the runner's container was OOM-killed.
	ReasonOOM Reason = "oom"
	// ReasonImagePull: the runner image could not be pulled in time.
	ReasonImagePull Reason = "image_pull"
	// ReasonUnschedulable: no node could take the Job's pod in time.
	ReasonUnschedulable Reason = "unschedulable"
	// ReasonPodCreate: the Job controller could not create the pod in time
	// (a missing service account, an admission webhook, a quota on pods).
	ReasonPodCreate Reason = "pod_create"
	// ReasonJobDeleted: the Job disappeared while the build ran.
	ReasonJobDeleted Reason = "job_deleted"
	// ReasonPodFailed: the runner's container ended without reporting a result.
	ReasonPodFailed Reason = "pod_failed"
	// ReasonRunnerLost: the Job ended and no container status tells how the
	// runner ended, and it reported no result.
	ReasonRunnerLost Reason = "runner_lost"

	// Reasons the launcher gives.

	// ReasonInvalidJob: the template is unknown, the Job could not be
	// rendered, or the Kubernetes API refused it as invalid.
	ReasonInvalidJob Reason = "invalid_job"
	// ReasonQuota: the namespace's ResourceQuota refused the Job. A build
	// waits (pending) while this lasts; it is the reason of a build that
	// ends while waiting for quota.
	ReasonQuota Reason = "quota"

	// ReasonProvisioning: the build's project failed to provision (its
	// workspace was rolled back); the error names the failed step.
	ReasonProvisioning Reason = "provisioning"

	// Reasons the runner gives (in BuildResult.Reason).

	// ReasonAgentError: the agent reported an error that no other reason
	// names, or exited without a result line.
	ReasonAgentError Reason = "agent_error"
	// ReasonMaxTurns: the agent reached its maximum number of turns.
	ReasonMaxTurns Reason = "max_turns"
	// ReasonAgentAuth: the model's API refused the agent's credentials
	// (HTTP 401 or 403).
	ReasonAgentAuth Reason = "agent_auth"
	// ReasonAgentBadRequest: the model's API refused the agent's request
	// (HTTP 400), such as a prompt too long for the model.
	ReasonAgentBadRequest Reason = "agent_bad_request"
	// ReasonAgentUnavailable: the agent could not get an answer from the
	// model's API after its own retries (HTTP 429, 5xx, 529, a lost
	// connection, a timeout).
	ReasonAgentUnavailable Reason = "agent_unavailable"
	// ReasonBudgetExceeded: the agent was stopped by the build's spending
	// cap (max_budget_usd); the error says what it spent.
	ReasonBudgetExceeded Reason = "budget_exceeded"
	// ReasonSessionUnavailable: a follow-up could not continue its earlier
	// build's agent session (the workspace pod was replaced, or the earlier
	// build never started the agent) and did not ask for fallback "fresh".
	ReasonSessionUnavailable Reason = "session_unavailable"
	// ReasonAgentPushed: the agent pushed to the remote itself; only the
	// runner's git step may push.
	ReasonAgentPushed Reason = "agent_pushed"
	// ReasonWorkspace: the runner could not reach or use the project's pod
	// (exec refused, pod not found, workdir missing).
	ReasonWorkspace Reason = "workspace"
	// ReasonGit: the runner's git step (add, commit) failed.
	ReasonGit Reason = "git"
	// ReasonPushRejected: the remote refused the push.
	ReasonPushRejected Reason = "push_rejected"
	// ReasonRunnerError: the runner reported failure without a more
	// specific reason.
	ReasonRunnerError Reason = "runner_error"

	// ReasonOther: a failure recorded before reasons were typed, or one
	// nobody classified. A bug to report when it appears for new builds.
	ReasonOther Reason = "other"
)

// FailureReasons lists every reason a failed build can carry.
var FailureReasons = []Reason{
	ReasonDeadline, ReasonOOM, ReasonImagePull, ReasonUnschedulable, ReasonPodCreate, ReasonJobDeleted,
	ReasonPodFailed, ReasonRunnerLost, ReasonInvalidJob, ReasonQuota, ReasonProvisioning, ReasonAgentError, ReasonMaxTurns,
	ReasonBudgetExceeded, ReasonSessionUnavailable,
	ReasonAgentAuth, ReasonAgentBadRequest, ReasonAgentUnavailable, ReasonAgentPushed,
	ReasonWorkspace, ReasonGit, ReasonPushRejected, ReasonRunnerError, ReasonOther,
}

// Reasons lists every non-empty reason: the failure reasons and ReasonCancelled.
var Reasons = append([]Reason{ReasonCancelled}, FailureReasons...)

// Valid reports whether r is ReasonNone or one of Reasons.
func (r Reason) Valid() bool {
	if r == ReasonNone {
		return true
	}
	for _, v := range Reasons {
		if v == r {
			return true
		}
	}
	return false
}

// Label is r as a metric label value: "none" for ReasonNone.
func (r Reason) Label() string {
	if r == ReasonNone {
		return "none"
	}
	return string(r)
}
