package provision

import (
	"github.com/riverqueue/river"
)

// Queue is the River queue provisioning jobs run on.
const Queue = "provision"

// ProvisionArgs asks for a project's workspace to be provisioned.
type ProvisionArgs struct {
	ProjectID string `json:"project_id"`
}

// Kind implements river.JobArgs.
func (ProvisionArgs) Kind() string { return "kiln_provision" }

// InsertOpts implements river.JobArgsWithInsertOpts: one job per project
// while it is not finished.
func (ProvisionArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 50, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// RetireArgs asks for a project's workspace to be removed and the project retired.
type RetireArgs struct {
	ProjectID string `json:"project_id"`
}

// Kind implements river.JobArgs.
func (RetireArgs) Kind() string { return "kiln_retire" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (RetireArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 50, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}
