package schema

import "time"

// BuildSpec is the request body of a build. Field names are fixed: bots speak them.
type BuildSpec struct {
	Prompt      string            `json:"prompt"`
	Template    string            `json:"template,omitempty"`
	Variables   map[string]string `json:"variables,omitempty"`
	AutoCommit  bool              `json:"auto_commit"`
	AutoPush    bool              `json:"auto_push"`
	CallbackURL string            `json:"callback_url,omitempty"`
}

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
	// optional.
	SessionID string `json:"session_id,omitempty"`
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
}

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
}

// ResultSummary is the part of a BuildResult a BuildSummary holds.
type ResultSummary struct {
	Success           bool   `json:"success"`
	CommitSHA         string `json:"commit_sha,omitempty"`
	FilesChangedCount int    `json:"files_changed_count"`
	ArtifactCount     int    `json:"artifact_count"`
	DurationMS        int64  `json:"duration_ms"`
}
