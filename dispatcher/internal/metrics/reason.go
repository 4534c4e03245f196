package metrics

import (
	"context"
	"errors"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Reasons of kiln_builds_total. A completed build has ReasonNone, a cancelled
// one ReasonCancelled; a failed one one of the others. The set is fixed so
// the label's cardinality stays bounded.
const (
	ReasonNone           = "none"
	ReasonCancelled      = "cancelled"
	ReasonRunnerError    = "runner_error"    // the runner reported failure (agent, git step) with a result
	ReasonJobDeleted     = "job_deleted"     // the Job disappeared while the build ran
	ReasonTimeout        = "timeout"         // the Job's activeDeadlineSeconds passed
	ReasonOOM            = "oom"             // the runner container was OOM-killed
	ReasonNoResult       = "no_result"       // the runner exited without reporting a result
	ReasonImagePull      = "image_pull"      // the runner image could not be pulled in time
	ReasonUnschedulable  = "unschedulable"   // no node could take the pod in time
	ReasonPodCreate      = "pod_create"      // the Job controller could not create the pod
	ReasonLaunchRejected = "launch_rejected" // the template or the Kubernetes API refused the Job
	ReasonOther          = "other"
)

// FailureReasons lists every reason a failed build can carry.
var FailureReasons = []string{ReasonRunnerError, ReasonJobDeleted, ReasonTimeout, ReasonOOM, ReasonNoResult,
	ReasonImagePull, ReasonUnschedulable, ReasonPodCreate, ReasonLaunchRejected, ReasonOther}

// failurePrefixes maps the start of a failed build's error, as the watcher
// and the launcher write it, to its reason.
var failurePrefixes = []struct{ prefix, reason string }{
	{"job deleted", ReasonJobDeleted},
	{"timed out after", ReasonTimeout},
	{"out of memory", ReasonOOM},
	{"runner exited", ReasonNoResult},
	{"image pull failed", ReasonImagePull},
	{"unschedulable", ReasonUnschedulable},
	{"the Job's pod could not be created", ReasonPodCreate},
	{"template ", ReasonLaunchRejected},
	{"rendering the Job", ReasonLaunchRejected},
	{"the Kubernetes API rejected the Job", ReasonLaunchRejected},
}

// Reason classifies a terminal build into one of the fixed reasons.
func Reason(b *store.Build) string {
	switch b.Status {
	case schema.StatusCompleted:
		return ReasonNone
	case schema.StatusCancelled:
		return ReasonCancelled
	}
	for _, p := range failurePrefixes {
		if strings.HasPrefix(b.Error, p.prefix) {
			return p.reason
		}
	}
	if b.Result != nil {
		return ReasonRunnerError
	}
	return ReasonOther
}

// Reasons of kiln_job_launch_errors_total.
const (
	LaunchQuota       = "quota_exceeded"
	LaunchInvalid     = "invalid"
	LaunchForbidden   = "forbidden"
	LaunchNotFound    = "not_found"
	LaunchConflict    = "conflict"
	LaunchThrottled   = "throttled"
	LaunchTimeout     = "timeout"
	LaunchUnavailable = "unavailable"
	LaunchOther       = "other"
)

// LaunchReasons lists every reason of kiln_job_launch_errors_total.
var LaunchReasons = []string{LaunchQuota, LaunchInvalid, LaunchForbidden, LaunchNotFound, LaunchConflict,
	LaunchThrottled, LaunchTimeout, LaunchUnavailable, LaunchOther}

// LaunchReason classifies an error from creating a build's Job.
func LaunchReason(err error) string {
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota"):
		return LaunchQuota
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return LaunchInvalid
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return LaunchForbidden
	case apierrors.IsNotFound(err):
		return LaunchNotFound
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return LaunchConflict
	case apierrors.IsTooManyRequests(err):
		return LaunchThrottled
	case apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		return LaunchTimeout
	case apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err):
		return LaunchUnavailable
	}
	return LaunchOther
}
