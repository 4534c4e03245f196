package schema

import "time"

// ProjectStatus is where a project is in its life. A bring-your-own-pod
// project is ready at once; a managed one is provisioning until its
// workspace exists (ready) or provisioning failed and was rolled back
// (failed). DELETE makes it deleting; once its resources are gone the API
// answers 404 for it.
type ProjectStatus string

const (
	ProjectProvisioning ProjectStatus = "provisioning"
	ProjectReady        ProjectStatus = "ready"
	ProjectFailed       ProjectStatus = "failed"
	ProjectDeleting     ProjectStatus = "deleting"
)

// ProjectStatuses lists the statuses the API shows, in life order.
var ProjectStatuses = []ProjectStatus{ProjectProvisioning, ProjectReady, ProjectFailed, ProjectDeleting}

// Project is a long-lived workspace builds run in: a pod holding a git clone.
type Project struct {
	ID     string        `json:"id"`
	Name   string        `json:"name"`
	Status ProjectStatus `json:"status"`
	// Managed: Kiln provisioned the workspace (Repository is set); false for
	// a bring-your-own-pod project.
	Managed bool `json:"managed"`
	// Target: where the runner execs the agent and git.
	Namespace   string `json:"namespace"`
	PodName     string `json:"pod_name,omitempty"`
	PodSelector string `json:"pod_selector,omitempty"`
	Container   string `json:"container,omitempty"`
	Workdir     string `json:"workdir"`
	GitRemote   string `json:"git_remote"`
	GitBranch   string `json:"git_branch"`
	AuthorName  string `json:"commit_author_name"`
	AuthorEmail string `json:"commit_author_email"`
	// MaxConcurrent caps the project's running builds (they share one workspace).
	MaxConcurrent int       `json:"max_concurrent"`
	CreatedAt     time.Time `json:"created_at"`
	// CallbackSecret signs callbacks. It is returned once, when the project is created.
	CallbackSecret string `json:"callback_secret,omitempty"`

	// Managed projects only.
	Repository   *Repository   `json:"repository,omitempty"`
	Workspace    *Workspace    `json:"workspace,omitempty"`
	Addons       []Addon       `json:"addons,omitempty"`
	Provisioning *Provisioning `json:"provisioning,omitempty"`

	// Spend is what the project's builds spent this calendar month (UTC),
	// as their agents reported it; GET /projects/{id} sets it.
	Spend *ProjectSpend `json:"spend,omitempty"`
}

// ProjectSpend is a project's spend in one calendar month (UTC).
type ProjectSpend struct {
	// Month is "YYYY-MM".
	Month string `json:"month"`
	// CostUSD sums the agent-reported cost of the month's finished builds.
	CostUSD float64 `json:"cost_usd"`
	// Builds counts the month's finished builds that reported a cost.
	Builds int `json:"builds"`
}

// ProjectInput is the body of POST /projects. A bring-your-own-pod project
// names its pod (Namespace, PodName or PodSelector, Workdir...); a managed
// one gives Repository (and optionally Workspace and Addons) and Kiln
// creates the namespace, pod and add-ons.
type ProjectInput struct {
	Name          string `json:"name"`
	Namespace     string `json:"namespace,omitempty"`
	PodName       string `json:"pod_name,omitempty"`
	PodSelector   string `json:"pod_selector,omitempty"`
	Container     string `json:"container,omitempty"`
	Workdir       string `json:"workdir,omitempty"`
	GitRemote     string `json:"git_remote,omitempty"`
	GitBranch     string `json:"git_branch,omitempty"`
	AuthorName    string `json:"commit_author_name,omitempty"`
	AuthorEmail   string `json:"commit_author_email,omitempty"`
	MaxConcurrent int    `json:"max_concurrent,omitempty"`

	Repository *RepositoryInput `json:"repository,omitempty"`
	Workspace  *WorkspaceInput  `json:"workspace,omitempty"`
	Addons     []AddonInput     `json:"addons,omitempty"`
}

// RepositoryInput is the repository a managed project's workspace clones.
type RepositoryInput struct {
	URL         string       `json:"url"`    // https://, http://, ssh:// or user@host:path; no credentials in it
	Branch      string       `json:"branch"` // the branch builds start from and push to
	Credentials *Credentials `json:"credentials,omitempty"`
}

// Credentials reach a private repository: Username and Token for HTTPS, or
// SSHPrivateKey and KnownHosts for SSH. They are stored only in Kubernetes
// Secrets and never returned.
type Credentials struct {
	Username      string `json:"username,omitempty"`
	Token         string `json:"token,omitempty"`
	SSHPrivateKey string `json:"ssh_private_key,omitempty"`
	KnownHosts    string `json:"known_hosts,omitempty"`
}

// Kind of credentials: "https", "ssh" or "" (none).
func (c *Credentials) Kind() string {
	switch {
	case c == nil:
		return ""
	case c.SSHPrivateKey != "":
		return CredentialsSSH
	case c.Token != "":
		return CredentialsHTTPS
	}
	return ""
}

// Credential kinds.
const (
	CredentialsHTTPS = "https"
	CredentialsSSH   = "ssh"
)

// WorkspaceInput shapes a managed project's workspace pod.
type WorkspaceInput struct {
	Image     string            `json:"image,omitempty"`      // default: the dispatcher's configured workspace image
	Env       map[string]string `json:"env,omitempty"`        // plain environment of the workspace (and so the agent)
	SecretEnv map[string]string `json:"secret_env,omitempty"` // environment kept in a Kubernetes Secret; never echoed
	Resources *Resources        `json:"resources,omitempty"`
}

// Resources are the workspace container's requests and limits, in
// Kubernetes quantities ("500m", "1Gi"); keys cpu and memory.
type Resources struct {
	Requests map[string]string `json:"requests,omitempty"`
	Limits   map[string]string `json:"limits,omitempty"`
}

// AddonInput asks for an add-on: {"type": "postgres"} or {"type": "redis"}.
type AddonInput struct {
	Type string `json:"type"`
}

// Repository is what the API shows of a managed project's repository.
type Repository struct {
	URL    string `json:"url"`
	Branch string `json:"branch"`
	// Credentials is the kind given ("https", "ssh") or empty; never a secret.
	Credentials string `json:"credentials,omitempty"`
	Username    string `json:"username,omitempty"`
}

// Workspace is what the API shows of a managed project's workspace: the
// names of its secret variables, never their values.
type Workspace struct {
	Image         string            `json:"image"`
	Env           map[string]string `json:"env,omitempty"`
	SecretEnvKeys []string          `json:"secret_env_keys,omitempty"`
	Resources     *Resources        `json:"resources,omitempty"`
}

// Addon is a provisioned (or asked-for) add-on and the environment variable
// names it set in the workspace (never their values).
type Addon struct {
	Type string   `json:"type"`
	Env  []string `json:"env,omitempty"`
}

// Provisioning is how a managed project's workspace came (or failed) to be.
type Provisioning struct {
	Steps []ProvisioningStep `json:"steps"`
	// FailedStep and Error name the step that failed and why (status failed).
	FailedStep string     `json:"failed_step,omitempty"`
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	ReadyAt    *time.Time `json:"ready_at,omitempty"`
}

// StepStatus is where one provisioning step is.
type StepStatus string

const (
	StepPending     StepStatus = "pending"
	StepRunning     StepStatus = "running"
	StepDone        StepStatus = "done"
	StepFailed      StepStatus = "failed"
	StepRollingBack StepStatus = "rolling_back"
	StepRolledBack  StepStatus = "rolled_back"
)

// StepStatuses lists every StepStatus.
var StepStatuses = []StepStatus{StepPending, StepRunning, StepDone, StepFailed, StepRollingBack, StepRolledBack}

// ProvisioningStep is one step: "namespace", "service_account", "secret",
// "addon:postgres", "addon:redis", "workspace", "runner_access".
type ProvisioningStep struct {
	Name       string     `json:"name"`
	Status     StepStatus `json:"status"`
	Error      string     `json:"error,omitempty"`
	Attempts   int        `json:"attempts"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// CreateAndBuild is the body of POST /project/create-and-build.
type CreateAndBuild struct {
	Project ProjectInput `json:"project"`
	Build   BuildSpec    `json:"build"`
}
