package metrics

import (
	"regexp"
	"slices"
	"time"
)

// Step label values of the provisioning metrics: the provisioning steps of a
// managed project, in the order they run, and StepRollback. An add-on's step
// is "addon:<type>"; StepOther stands for any name outside that set, so the
// label stays bounded whatever a caller passes.
const (
	StepNamespace      = "namespace"
	StepServiceAccount = "service_account"
	StepSecret         = "secret"
	StepWorkspace      = "workspace"
	StepRunnerAccess   = "runner_access"
	// StepRollback is the undoing of the completed steps after a step failed.
	StepRollback = "rollback"
	StepOther    = "other"
)

// ProvisionSteps are the step label values every series starts with (at
// zero). Another add-on's "addon:<type>" is accepted too; its series appears
// when it is first observed.
var ProvisionSteps = []string{StepNamespace, StepServiceAccount, StepSecret, "addon:postgres", "addon:redis",
	StepWorkspace, StepRunnerAccess, StepRollback}

// addonStep matches an add-on's step name; the type is an adapter's name, so
// a short lowercase word.
var addonStep = regexp.MustCompile(`^addon:[a-z][a-z0-9_]{0,31}$`)

// Provisioning outcomes (the outcome label of kiln_provisioning_duration_seconds).
const (
	ProvisionReady  = "ready"
	ProvisionFailed = "failed"
)

// Bucket layouts of provisioning, in seconds: a whole provisioning waits
// for a pod to clone its repository; a step is one or a few API calls, or
// that wait (workspace).
var (
	provisionBuckets = []float64{1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200}
	stepBuckets      = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// stepLabel is step as a label value: one of ProvisionSteps, an add-on's
// step, or StepOther.
func stepLabel(step string) string {
	if slices.Contains(ProvisionSteps, step) || addonStep.MatchString(step) {
		return step
	}
	return StepOther
}

// ProvisionStep observes one attempt at a provisioning step of a managed
// project (the provisioning worker calls it for every attempt, retries
// included, and once for a rollback with StepRollback): a failed attempt
// counts in kiln_provisioning_step_failures_total, a successful one's time
// in kiln_provisioning_step_duration_seconds.
func (m *Metrics) ProvisionStep(step string, took time.Duration, failed bool) {
	step = stepLabel(step)
	if failed {
		m.stepFailures.WithLabelValues(step).Inc()
		return
	}
	m.stepDuration.WithLabelValues(step).Observe(seconds(took))
}

// Provisioned observes a managed project's provisioning that ended: took is
// from its POST to ready (ok) or to failed, rolled back (!ok).
func (m *Metrics) Provisioned(took time.Duration, ok bool) {
	outcome := ProvisionFailed
	if ok {
		outcome = ProvisionReady
	}
	m.provisioned.WithLabelValues(outcome).Observe(seconds(took))
}
