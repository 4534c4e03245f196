package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type      string              `json:"type"`
	Title     string              `json:"title"`
	Status    int                 `json:"status"`
	Detail    string              `json:"detail,omitempty"`
	Instance  string              `json:"instance,omitempty"`
	RequestID string              `json:"request_id,omitempty"`
	Errors    []intake.FieldError `json:"errors,omitempty"`
}

// problemError is an error that already knows its answer.
type problemError struct {
	status int
	detail string
	errs   []intake.FieldError
}

func (e *problemError) Error() string { return e.detail }

func newProblem(status int, format string, args ...any) *problemError {
	return &problemError{status: status, detail: fmt.Sprintf(format, args...)}
}

func fieldProblem(status int, field, rule string) *problemError {
	return &problemError{status: status, detail: field + ": " + rule, errs: []intake.FieldError{{Field: field, Rule: rule}}}
}

var problemTypes = map[int]string{
	http.StatusBadRequest:            "malformed-request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not-found",
	http.StatusMethodNotAllowed:      "method-not-allowed",
	http.StatusConflict:              "conflict",
	http.StatusRequestEntityTooLarge: "body-too-large",
	http.StatusUnsupportedMediaType:  "unsupported-media-type",
	http.StatusUnprocessableEntity:   "validation-failed",
	http.StatusServiceUnavailable:    "unavailable",
	http.StatusInternalServerError:   "internal-error",
}

// writeError answers err as problem+json. Errors it does not know are logged
// with the request id and answered 500 without their text.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := Problem{Instance: r.URL.Path, RequestID: requestID(r.Context())}
	var pe *problemError
	var ve intake.ValidationError
	switch {
	case errors.As(err, &pe):
		p.Status, p.Detail, p.Errors = pe.status, pe.detail, pe.errs
	case errors.As(err, &ve):
		p.Status, p.Detail, p.Errors = http.StatusUnprocessableEntity, ve.Error(), ve
	case errors.Is(err, store.ErrNotFound):
		p.Status, p.Detail = http.StatusNotFound, notFoundDetail(err)
	case errors.Is(err, store.ErrTerminal):
		p.Status, p.Detail = http.StatusConflict, "the build is already in a terminal status"
	case errors.Is(err, store.ErrConflict):
		p.Status, p.Detail = http.StatusConflict, err.Error()
	case errors.Is(err, intake.ErrIdempotencyMismatch):
		p.Status = http.StatusUnprocessableEntity
		p.Detail = "Idempotency-Key: already used with a different request body"
		p.Errors = []intake.FieldError{{Field: "Idempotency-Key", Rule: "already used with a different request body"}}
	case errors.Is(err, intake.ErrForbidden):
		p.Status, p.Detail = http.StatusForbidden, "this token may not do that; an admin token is required"
	case store.IsUnavailable(err):
		s.logger.WarnContext(r.Context(), "database unavailable", "error", err, "request_id", p.RequestID,
			"method", r.Method, "path", r.URL.Path)
		w.Header().Set("Retry-After", "1")
		p.Status, p.Detail = http.StatusServiceUnavailable,
			"the database is unavailable for a moment; retry (a build submission with the same Idempotency-Key is made once)"
	default:
		s.logger.ErrorContext(r.Context(), "request failed", "error", err, "request_id", p.RequestID,
			"method", r.Method, "path", r.URL.Path)
		p.Status, p.Detail = http.StatusInternalServerError, "internal error; quote the request id when reporting it"
	}
	p.Type = "https://kiln.dev/problems/" + problemTypes[p.Status]
	p.Title = http.StatusText(p.Status)
	if p.Status >= 500 {
		s.logger.Log(r.Context(), slog.LevelWarn, "answered with server error", "status", p.Status, "request_id", p.RequestID)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// notFoundDetail keeps ids the caller gave but never internal wording.
func notFoundDetail(err error) string {
	msg := err.Error()
	if len(msg) > 200 {
		return "not found"
	}
	return msg
}
