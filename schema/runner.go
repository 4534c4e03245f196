package schema

import (
	"encoding/json"
	"time"
)

// The runner protocol: the jobrunner in a build's Job talks to the dispatcher
// with the build's runner token (Authorization: Bearer), only about its own
// build. Paths are relative to the dispatcher URL the Job was given.
//
//	GET  /runner/v1/builds/{id}            → RunnerTask
//	POST /runner/v1/builds/{id}/events     EventBatch → EventBatchAck     (a retried batch is stored once)
//	POST /runner/v1/builds/{id}/artifacts  ArtifactUpload → Artifact
//	POST /runner/v1/builds/{id}/result     BuildResult → ResultAck        (idempotent, see below)
//
// What a runner may post:
//
//   - Events of the types in RunnerEventTypes only (never status or info:
//     the dispatcher writes those). Each payload is a JSON object with the
//     fields of its payload type (AgentTextPayload, ...; keys match exactly,
//     every field without omitempty is required, no other key, a log level
//     is info, warn or error; an agent_retry's attempt is at least 1, its
//     max_retries and delay_ms are not negative and its status is an HTTP
//     status or 0; a permission_denied names its tool). A batch with one bad event is refused whole
//     (422, naming events[i], the type and the field) and nothing of it is
//     stored; its number is free to be used again.
//   - Text Postgres cannot store (NUL, invalid UTF-8, an unpaired UTF-16
//     surrogate) in an event payload's strings or in a result is not
//     refused: it is replaced with U+FFFD. A stored event so repaired carries
//     SanitizedKey ("sanitized": true) in its payload; a repaired result is
//     told by an info event written before the result settles the build. An
//     artifact path must be exact: NUL or invalid UTF-8 there is refused (422).
//   - Per-build caps (the dispatcher's configuration; defaults 100000 events,
//     64 MiB of event payloads, 100 artifacts, 100 MiB of artifacts): a post
//     past one is refused with a problem of type ProblemRunnerCap, 422 for a
//     count and 413 for bytes, and nothing of it is stored. A runner stops
//     posting that kind (events, or artifacts) and still posts its result.
//
// After the build is terminal, events and artifacts answer 409, and so does a
// result, except the very result that settled the build posted again (its
// answer was lost): that one answers 200 {accepted: true, duplicate: true};
// and except the result of a runner whose build ended without one (it was
// cancelled, or the dispatcher saw its end first): that one is kept as the
// build's account — output, usage, session, kept work — without changing its
// status, reason or error, and answers 200 {accepted: false}. A cancelled:
// true result posted while the build runs is kept the same way.
// The runner token stops working when the build ends: a short grace later
// (the dispatcher's; 5 minutes by default, so a runner still sees 409 and a
// terminal task while it stops) every request with it answers 401.
const RunnerAPIPrefix = "/runner/v1/builds/"

// RunnerEventTypes are the event types a runner may post.
var RunnerEventTypes = []EventType{EventAgentText, EventToolCall, EventToolResult, EventUsage, EventGit, EventLog,
	EventAgentRetry, EventPermissionDenied}

// SanitizedKey is the payload key, set to true, of a stored runner event
// whose strings held text Postgres cannot store and were repaired (each such
// character replaced with U+FFFD). A runner may not send it.
const SanitizedKey = "sanitized"

// ProblemRunnerCap is the problem type of a runner post refused because it
// would take the build past one of its per-build caps (422 for a count, 413
// for bytes).
const ProblemRunnerCap = "https://kiln.dev/problems/runner-cap"

// RunnerTask is what the runner fetches before it starts.
type RunnerTask struct {
	BuildID   string    `json:"build_id"`
	ProjectID string    `json:"project_id"`
	Spec      BuildSpec `json:"spec"`
	Status    Status    `json:"status"`
	Target    Target    `json:"target"`
	// Followup is set when the build follows up an earlier one.
	Followup *FollowupTask `json:"followup,omitempty"`
}

// FollowupTask is what a follow-up's runner needs of the build it follows up.
type FollowupTask struct {
	// ParentID is the earlier build's id.
	ParentID string `json:"parent_id"`
	// SessionID is the earlier build's agent session (its result's
	// session_id), to continue with --resume; empty when it never started
	// the agent.
	SessionID string `json:"session_id,omitempty"`
	// Fallback is the follow-up's BuildSpec.Fallback.
	Fallback Fallback `json:"fallback,omitempty"`
	// ParentPrompt and ParentOutput are the earlier build's prompt and the
	// agent's final output (each at most FollowupContextBytes), the context
	// of a fresh session (FallbackFresh).
	ParentPrompt string `json:"parent_prompt"`
	ParentOutput string `json:"parent_output"`
	// PartialBranch and PartialCommitSHA are the earlier build's kept work:
	// the follow-up starts from that state. Empty when it kept none.
	PartialBranch    string `json:"partial_branch,omitempty"`
	PartialCommitSHA string `json:"partial_commit_sha,omitempty"`
}

// FollowupContextBytes bounds FollowupTask.ParentPrompt and ParentOutput.
const FollowupContextBytes = 32 << 10

// Target is where a build runs: the project's pod and its git settings.
type Target struct {
	Namespace   string `json:"namespace"`
	PodName     string `json:"pod_name,omitempty"`
	PodSelector string `json:"pod_selector,omitempty"`
	Container   string `json:"container,omitempty"`
	Workdir     string `json:"workdir"`
	GitRemote   string `json:"git_remote"`
	GitBranch   string `json:"git_branch"`
	AuthorName  string `json:"commit_author_name"`
	AuthorEmail string `json:"commit_author_email"`
}

// TargetOf returns a project's target.
func TargetOf(p *Project) Target {
	return Target{Namespace: p.Namespace, PodName: p.PodName, PodSelector: p.PodSelector, Container: p.Container,
		Workdir: p.Workdir, GitRemote: p.GitRemote, GitBranch: p.GitBranch, AuthorName: p.AuthorName, AuthorEmail: p.AuthorEmail}
}

// EventInput is one event the runner reports; the dispatcher assigns Seq.
type EventInput struct {
	Type    EventType       `json:"type"`
	Time    time.Time       `json:"time"`
	Payload json.RawMessage `json:"payload"`
}

// EventBatch is a group of events the runner posts. Batch numbers start at 1
// and increase by one; a batch number already stored is acknowledged again
// without storing its events twice.
type EventBatch struct {
	Batch  int64        `json:"batch"`
	Events []EventInput `json:"events"`
}

// EventBatchAck answers an EventBatch. Status lets the runner notice a cancel.
type EventBatchAck struct {
	Stored    int    `json:"stored"`
	Duplicate bool   `json:"duplicate"`
	Status    Status `json:"status"`
}

// ResultAck answers a posted BuildResult. A result posted after the build
// is terminal answers 409 instead, unless it is the one that settled it.
type ResultAck struct {
	Status Status `json:"status"`
	// Accepted: the result settled the build. False: it settled nothing (a
	// runner that stopped, cancelled: true; the watcher settles the build).
	Accepted bool `json:"accepted"`
	// Duplicate: the result had settled the build already; this was a retry.
	Duplicate bool `json:"duplicate,omitempty"`
}

// TerminationSummary is what the runner writes to its termination message, so
// the dispatcher learns the outcome from pod status when the result post
// could not get through. It stays well under the 4 KiB limit.
type TerminationSummary struct {
	Kiln         int    `json:"kiln"` // format version: 1
	Success      bool   `json:"success"`
	Cancelled    bool   `json:"cancelled,omitempty"`
	Error        string `json:"error,omitempty"`
	Reason       Reason `json:"reason,omitempty"`
	CommitSHA    string `json:"commit_sha,omitempty"`
	FilesChanged int    `json:"files_changed"`
	DurationMS   int64  `json:"duration_ms"`
	Reported     bool   `json:"reported"` // the result post succeeded
}

// ArtifactUpload is a file the runner uploads after a build:
//
//	POST /runner/v1/builds/{id}/artifacts  ArtifactUpload → Artifact (with its URL)
//
// Content is base64 in JSON. The dispatcher checks Size and SHA256 against
// Content and keeps at most its configured maximum per file (10 MiB by
// default, 413 beyond); Path is a clean relative path, exact (no NUL, valid
// UTF-8). Uploading a path again replaces it.
type ArtifactUpload struct {
	Path    string `json:"path"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	Content []byte `json:"content"`
}

// ArtifactURL is where the API serves a build's artifact (relative to the API's base URL).
func ArtifactURL(buildID, path string) string {
	return "/builds/" + buildID + "/artifacts/" + path
}
