package schema

import "time"

// Project is a long-lived workspace builds run in: a pod holding a git clone.
type Project struct {
	ID   string `json:"id"`
	Name string `json:"name"`
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
}

// ProjectInput is the body of POST /projects.
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
}

// CreateAndBuild is the body of POST /project/create-and-build.
type CreateAndBuild struct {
	Project ProjectInput `json:"project"`
	Build   BuildSpec    `json:"build"`
}
