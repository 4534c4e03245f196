package schema

import (
	"encoding/json"
	"time"
)

// The runner protocol: the jobrunner in a build's Job talks to the dispatcher
// with the build's runner token (Authorization: Bearer), only about its own
// build. Paths are relative to the dispatcher URL the Job was given.
//
//	GET  /runner/v1/builds/{id}         → RunnerTask
//	POST /runner/v1/builds/{id}/events  EventBatch → EventBatchAck   (a retried batch is stored once)
//	POST /runner/v1/builds/{id}/result  BuildResult → ResultAck      (idempotent; late results are ignored)
const RunnerAPIPrefix = "/runner/v1/builds/"

// RunnerTask is what the runner fetches before it starts.
type RunnerTask struct {
	BuildID   string    `json:"build_id"`
	ProjectID string    `json:"project_id"`
	Spec      BuildSpec `json:"spec"`
	Status    Status    `json:"status"`
	Target    Target    `json:"target"`
}

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

// ResultAck answers a posted BuildResult.
type ResultAck struct {
	Status   Status `json:"status"`
	Accepted bool   `json:"accepted"` // false: the build was already terminal; the result was ignored
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
// Content and keeps at most its configured maximum per file (10 MiB by default).
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
