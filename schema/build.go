package schema

import (
	"strings"
	"time"
)

// BuildSpec is the request body of a build. Field names are fixed: bots speak them.
type BuildSpec struct {
	Prompt      string            `json:"prompt"`
	Template    string            `json:"template,omitempty"`
	Variables   map[string]string `json:"variables,omitempty"`
	AutoCommit  bool              `json:"auto_commit"`
	AutoPush    bool              `json:"auto_push"`
	CallbackURL string            `json:"callback_url,omitempty"`

	// MaxBudgetUSD caps what the agent may spend on this build, in US
	// dollars (the CLI's --max-budget-usd); optional: the template's
	// agent.maxBudgetUSD. It must be positive and at most the template's
	// limits.maxBudgetUSD.
	MaxBudgetUSD *float64 `json:"max_budget_usd,omitempty"`
	// MaxTurns caps the agent's turns (--max-turns); optional: the
	// template's agent.maxTurns. At least 1, at most the template's
	// limits.maxTurns.
	MaxTurns *int `json:"max_turns,omitempty"`
	// Branch, when set, is a review branch: the build's commit goes to it,
	// created from the project branch's head, and is pushed there; the
	// project branch is untouched. "{task_id}" in it is replaced by the
	// build's id (ReviewBranch). Optional; a valid git branch name.
	Branch string `json:"branch,omitempty"`
	// Fallback is for follow-ups only (POST /builds/{taskId}/followups):
	// what to do when the earlier build's agent session cannot be
	// continued. "" fails the follow-up with ReasonSessionUnavailable;
	// FallbackFresh starts a new session given the earlier prompt and
	// output as context.
	Fallback Fallback `json:"fallback,omitempty"`
}

// Fallback is what a follow-up does when its session cannot be continued.
type Fallback string

const (
	// FallbackNone: the follow-up fails with ReasonSessionUnavailable.
	FallbackNone Fallback = ""
	// FallbackFresh: the follow-up starts a new agent session with the
	// earlier build's prompt and output given as context.
	FallbackFresh Fallback = "fresh"
)

// TaskIDPlaceholder in BuildSpec.Branch stands for the build's id.
const TaskIDPlaceholder = "{task_id}"

// ReviewBranch is the spec's Branch with TaskIDPlaceholder replaced by
// taskID; "" when the spec names no branch.
func (s BuildSpec) ReviewBranch(taskID string) string {
	return strings.ReplaceAll(s.Branch, TaskIDPlaceholder, taskID)
}

// KeptWorkBranchPrefix starts the branch that keeps a failed or cancelled
// build's changes: KeptWorkBranch(taskID) = "kiln/<task id>".
const KeptWorkBranchPrefix = "kiln/"

// KeptWorkBranch is the branch a failed or cancelled build's changes are
// committed to (never the project branch).
func KeptWorkBranch(taskID string) string { return KeptWorkBranchPrefix + taskID }

// DefaultTemplate is the template a BuildSpec without one uses.
const DefaultTemplate = "default"

// TemplateName returns the spec's template, or DefaultTemplate when unset.
func (s BuildSpec) TemplateName() string {
	if s.Template == "" {
		return DefaultTemplate
	}
	return s.Template
}

// Artifact is a file a build produced, uploaded by the runner.
type Artifact struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	URL    string `json:"url,omitempty"`
}

// BuildResult is what the runner reports when a build ends.
type BuildResult struct {
	Success      bool       `json:"success"`
	Output       string     `json:"output"`
	Error        string     `json:"error"`
	CommitSHA    string     `json:"commit_sha"`
	FilesChanged []string   `json:"files_changed"`
	DurationMS   int64      `json:"duration_ms"`
	Artifacts    []Artifact `json:"artifacts"`
	// Usage is what the agent reported spending; optional.
	Usage *Usage `json:"usage,omitempty"`
	// Cancelled is set by the runner when it stopped because the build was cancelled.
	Cancelled bool `json:"cancelled,omitempty"`
	// Reason says why a failed run failed, as the runner knows it
	// (agent_error, max_turns, git, ...); empty on success.
	Reason Reason `json:"reason,omitempty"`
	// PermissionDenials lists the tool calls the agent was not allowed to
	// make, in order; optional.
	PermissionDenials []PermissionDenial `json:"permission_denials,omitempty"`
	// SessionID is the agent's session id (Claude Code's session_id);
	// optional. A follow-up of this build continues this session.
	SessionID string `json:"session_id,omitempty"`
	// Branch is the review branch the build committed to (BuildSpec.Branch
	// resolved); empty when it committed to the project branch.
	Branch string `json:"branch,omitempty"`
	// PartialBranch and PartialCommitSHA name the kept work of a build that
	// failed or was cancelled after its agent changed files: the runner
	// committed those changes to PartialBranch (KeptWorkBranch of the build's
	// id), pushed it when the build had auto_push, never the project branch.
	// Empty when nothing was kept.
	PartialBranch    string `json:"partial_branch,omitempty"`
	PartialCommitSHA string `json:"partial_commit_sha,omitempty"`
	// PartialPushed reports that PartialBranch is on the remote.
	PartialPushed bool `json:"partial_pushed,omitempty"`
}

// PermissionDenial is a tool call the agent was not allowed to make.
type PermissionDenial struct {
	// Tool is the tool's name ("Bash", "Write", ...).
	Tool string `json:"tool"`
	// Summary is a short, bounded account of the call's input: the Bash
	// command, the file path, the URL.
	Summary string `json:"summary"`
}

// Usage is the agent's accounting of one run.
type Usage struct {
	CostUSD      float64 `json:"cost_usd"`
	Turns        int     `json:"turns"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
}

// Status is a build's place in its lifecycle (build_audit.status).
type Status string

const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCancelled}

// Terminal reports whether s is final: completed, failed or cancelled.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// Valid reports whether s is one of Statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if v == s {
			return true
		}
	}
	return false
}

// Build is a build as the API returns it.
type Build struct {
	ID        string       `json:"task_id"`
	ProjectID string       `json:"project_id"`
	Spec      BuildSpec    `json:"spec"`
	Status    Status       `json:"status"`
	Result    *BuildResult `json:"result,omitempty"`
	Error     string       `json:"error,omitempty"`
	// Reason is the typed cause of a failed or cancelled build; empty otherwise.
	Reason      Reason     `json:"reason,omitempty"`
	Attempt     int        `json:"attempt"`
	JobName     string     `json:"job_name,omitempty"`
	RequestedBy string     `json:"requested_by"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	// Callbacks lists every attempt at delivering the build's callback.
	Callbacks []CallbackAttempt `json:"callbacks,omitempty"`
	// ParentID is the build this one follows up (POST
	// /builds/{taskId}/followups); empty for a build that is not a follow-up.
	ParentID string `json:"parent_id,omitempty"`
	// Followups lists the ids of this build's follow-ups, oldest first.
	Followups []string `json:"followups,omitempty"`
	// WaitingReason says why a pending build has not started; empty when
	// the dispatcher has not looked at it yet, and on every other status.
	WaitingReason WaitingReason `json:"waiting_reason,omitempty"`
	// QueuePosition is a pending build's place among its project's pending
	// builds, in the order they launch (1: next); 0 on every other status.
	QueuePosition int `json:"queue_position,omitempty"`
	// ConsoleURL is the build's page in the web console (ConsoleURL);
	// absent when the dispatcher has no public URL (KILN_PUBLIC_URL).
	ConsoleURL string `json:"console_url,omitempty"`
}

// WaitingReason is why a pending build waits, as a typed code. The
// dispatcher records it each time it looks at the build; each change is an
// info event (InfoPayload.WaitingReason) that watchers see.
type WaitingReason string

const (
	// WaitingCapacity: the dispatcher's global maximum of builds in flight is reached.
	WaitingCapacity WaitingReason = "capacity"
	// WaitingProjectBusy: the project's max_concurrent builds run, or an
	// older build of the project goes first (FIFO).
	WaitingProjectBusy WaitingReason = "project_busy"
	// WaitingQuota: the cluster refused the build's Job (a ResourceQuota).
	WaitingQuota WaitingReason = "quota"
	// WaitingProjectProvisioning: the build's project is still provisioning.
	WaitingProjectProvisioning WaitingReason = "project_provisioning"
)

// WaitingReasons lists every waiting reason.
var WaitingReasons = []WaitingReason{WaitingCapacity, WaitingProjectBusy, WaitingQuota, WaitingProjectProvisioning}

// CallbackAttempt is one try at delivering a terminal build's callback.
type CallbackAttempt struct {
	DeliveryID string    `json:"delivery_id"` // the Kiln-Delivery-Id header; the same on every retry
	Attempt    int       `json:"attempt"`
	StatusCode int       `json:"status_code,omitempty"` // absent when no HTTP answer came
	Outcome    string    `json:"outcome"`               // delivered, retry or failed
	Error      string    `json:"error,omitempty"`
	DurationMS int64     `json:"duration_ms"`
	At         time.Time `json:"at"`
}

// BuildAccepted is the 202 body of a build submission.
type BuildAccepted struct {
	TaskID string `json:"task_id"`
	Status Status `json:"status"`
	// ConsoleURL is the build's page in the web console (ConsoleURL);
	// absent when the dispatcher has no public URL (KILN_PUBLIC_URL).
	ConsoleURL string `json:"console_url,omitempty"`
}

// SummaryErrorChars is the most of a build's error text a BuildSummary holds;
// longer text is cut and ends with "…". GET /builds/{id} has all of it.
const SummaryErrorChars = 1024

// BuildSummary is a build as a list of builds shows it: what identifies and
// describes it, without what can be large (the prompt, the variables, the
// callback URL, the result's output and file names). GET /builds/{id} returns
// the whole build.
type BuildSummary struct {
	ID          string     `json:"task_id"`
	ProjectID   string     `json:"project_id"`
	Status      Status     `json:"status"`
	Reason      Reason     `json:"reason,omitempty"`
	Error       string     `json:"error,omitempty"` // at most SummaryErrorChars characters
	Template    string     `json:"template"`        // the template it runs with (DefaultTemplate when the spec names none)
	AutoCommit  bool       `json:"auto_commit"`
	AutoPush    bool       `json:"auto_push"`
	HasCallback bool       `json:"has_callback"` // the spec has a callback_url
	Attempt     int        `json:"attempt"`
	RequestedBy string     `json:"requested_by"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	// Result is set once the runner reported a result.
	Result *ResultSummary `json:"result,omitempty"`
	// ParentID, WaitingReason and QueuePosition are as in Build.
	ParentID      string        `json:"parent_id,omitempty"`
	WaitingReason WaitingReason `json:"waiting_reason,omitempty"`
	QueuePosition int           `json:"queue_position,omitempty"`
	// CostUSD is what the agent reported spending; 0 when unknown.
	CostUSD float64 `json:"cost_usd,omitempty"`
}

// ResultSummary is the part of a BuildResult a BuildSummary holds.
type ResultSummary struct {
	Success           bool   `json:"success"`
	CommitSHA         string `json:"commit_sha,omitempty"`
	FilesChangedCount int    `json:"files_changed_count"`
	ArtifactCount     int    `json:"artifact_count"`
	DurationMS        int64  `json:"duration_ms"`
}
