package gitstep

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Reasons a push fails, found with errors.Is on a *PushError.
var (
	ErrNonFastForward   = errors.New("non-fast-forward: the remote branch has commits this workspace does not have")
	ErrPermissionDenied = errors.New("permission denied by the remote")
	ErrRemoteRejected   = errors.New("the remote refused the update")
	ErrPushFailed       = errors.New("push failed")
)

// PushError is a push that did not land. Reason is one of the Err* reasons above.
type PushError struct {
	Reason error
	Remote string
	Branch string
	// Message is git's message, condensed (hints dropped) and with
	// credentials in URLs redacted.
	Message string
}

func (e *PushError) Error() string {
	msg := fmt.Sprintf("pushing to %s branch %s: %v", Redact(e.Remote), e.Branch, e.Reason)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

func (e *PushError) Unwrap() error { return e.Reason }

// maxMessage bounds the git message kept in errors.
const maxMessage = 2 << 10

// ClassifyPush reads a failed push's stderr into a *PushError.
func ClassifyPush(remote, branch string, stderr []byte) *PushError {
	text := string(stderr)
	lower := strings.ToLower(text)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(lower, s) {
				return true
			}
		}
		return false
	}
	var reason error
	switch {
	case has("permission denied", "permission to ", "access denied", "authentication failed",
		"could not read username", "could not read password", "returned error: 401", "returned error: 403",
		"insufficient permission", "not allowed to push", "you are not allowed", "write access to repository not granted"):
		reason = ErrPermissionDenied
	case has("non-fast-forward", "(fetch first)", "(stale info)", "tip of your current branch is behind"):
		reason = ErrNonFastForward
	case has("[remote rejected]", "hook declined", "protected branch"):
		reason = ErrRemoteRejected
	default:
		reason = ErrPushFailed
	}
	return &PushError{Reason: reason, Remote: remote, Branch: branch, Message: condense(text)}
}

// condense keeps git's message lines that are not hints, joined by "; ",
// redacted and bounded.
func condense(stderr string) string {
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(strings.TrimRight(l, "\r"))
		if l == "" || strings.HasPrefix(l, "hint:") || strings.HasPrefix(l, "To ") {
			continue
		}
		lines = append(lines, l)
	}
	msg := Redact(strings.Join(lines, "; "))
	if len(msg) > maxMessage {
		cut := maxMessage
		for cut > 0 && msg[cut]&0xC0 == 0x80 {
			cut--
		}
		msg = msg[:cut] + " [...]"
	}
	return msg
}

var urlCredentials = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@`)

// Redact hides credentials in URLs: https://user:token@host → https://***@host.
func Redact(s string) string {
	return urlCredentials.ReplaceAllString(s, "${1}***@")
}
