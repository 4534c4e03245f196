package launcher

import (
	"context"
	"errors"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// LaunchError says why an attempt at creating a build's Job failed: the
// reason label of kiln_job_launch_errors_total. The empty value means the
// attempt succeeded.
type LaunchError string

// Launch errors. Only LaunchQuota (the build waits) and LaunchInvalid (the
// build fails as invalid_job) change what happens to the build; River retries
// the others with backoff.
const (
	LaunchQuota       LaunchError = "quota_exceeded"
	LaunchInvalid     LaunchError = "invalid"
	LaunchForbidden   LaunchError = "forbidden"
	LaunchNotFound    LaunchError = "not_found"
	LaunchConflict    LaunchError = "conflict"
	LaunchThrottled   LaunchError = "throttled"
	LaunchTimeout     LaunchError = "timeout"
	LaunchUnavailable LaunchError = "unavailable"
	LaunchOther       LaunchError = "other"
)

// LaunchErrors lists every LaunchError.
var LaunchErrors = []LaunchError{LaunchQuota, LaunchInvalid, LaunchForbidden, LaunchNotFound, LaunchConflict,
	LaunchThrottled, LaunchTimeout, LaunchUnavailable, LaunchOther}

// ClassifyLaunchError says why creating a Job failed; "" for a nil error or
// an AlreadyExists (an earlier attempt made the Job: not a failure).
func ClassifyLaunchError(err error) LaunchError {
	switch {
	case err == nil || apierrors.IsAlreadyExists(err):
		return ""
	case isQuotaExceeded(err):
		return LaunchQuota
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return LaunchInvalid
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return LaunchForbidden
	case apierrors.IsNotFound(err):
		return LaunchNotFound
	case apierrors.IsConflict(err):
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

// isQuotaExceeded reports a create refused by a ResourceQuota. The API gives
// it as 403 Forbidden with no reason or cause of its own; the quota admission
// plugin's message ("exceeded quota: ...") is the only mark it carries, so
// this is the one place that reads it.
func isQuotaExceeded(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}
