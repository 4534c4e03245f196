package edge

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// ProblemTypeBase prefixes every problem type URI.
const ProblemTypeBase = "https://kiln.dev/problems/"

// Problem is an RFC 9457 problem details object, as the edge writes it.
type Problem struct {
	Type      string              `json:"type"`
	Title     string              `json:"title"`
	Status    int                 `json:"status"`
	Detail    string              `json:"detail,omitempty"`
	Instance  string              `json:"instance,omitempty"`
	RequestID string              `json:"request_id,omitempty"`
	Errors    []intake.FieldError `json:"errors,omitempty"`
}

// problemTypes names the type of each status the edge answers with.
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
	http.StatusTooManyRequests:       "rate-limited",
	http.StatusInternalServerError:   "internal-error",
	http.StatusNotImplemented:        "not-implemented",
	http.StatusServiceUnavailable:    "unavailable",
}

// ProblemType returns the type URI of a problem with status.
func ProblemType(status int) string {
	if t, ok := problemTypes[status]; ok {
		return ProblemTypeBase + t
	}
	return "about:blank"
}

// Error is an error that already knows its answer. Build one with Errorf,
// Field, Unavailable or TooManyRequests.
type Error struct {
	Status int
	// Type overrides the problem type URI the status gives (ProblemType),
	// for answers a client tells apart by type (a runner's per-build cap).
	Type   string
	Detail string // for the client: names the field and the rule
	Errors []intake.FieldError
	// RetryAfter is sent as Retry-After (whole seconds, at least 1) with a
	// 429 or 503; those get 1s when it is zero.
	RetryAfter time.Duration
	// Err is the cause; it is logged with a 5xx answer and never shown.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Detail + ": " + e.Err.Error()
	}
	return e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an Error answering status with a detail.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Detail: fmt.Sprintf(format, args...)}
}

// Field returns an Error answering status for one field and the rule it breaks.
func Field(status int, field, rule string) *Error {
	return &Error{Status: status, Detail: field + ": " + rule, Errors: []intake.FieldError{{Field: field, Rule: rule}}}
}

// Unavailable returns a 503 telling the client to retry after retryAfter.
func Unavailable(retryAfter time.Duration, detail string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Detail: detail, RetryAfter: retryAfter}
}

// TooManyRequests returns a 429 telling the client to retry after retryAfter.
func TooManyRequests(retryAfter time.Duration, detail string) *Error {
	return &Error{Status: http.StatusTooManyRequests, Detail: detail, RetryAfter: retryAfter}
}

// internalDetail is all a client learns of a 500.
const internalDetail = "internal error; quote the request id when reporting it"

// unavailableDetail answers a database that cannot be reached.
const unavailableDetail = "the database is unavailable for a moment; retry (a build submission with the same Idempotency-Key is made once)"

// Write answers err as problem+json. An *Error answers as it says; the
// errors of intake, store and auth answer with their status (validation
// 422, not found 404, terminal or conflict 409, forbidden 403, a reached
// monthly budget 429 of its own problem type with Retry-After, invalid
// token 401, database unreachable 503); anything else is a 500 whose text
// is logged with the request id, never sent.
//
// A request whose body was not read to its end is answered with the
// connection closed and its read deadline passed, so a refused client that
// declared a body and never sends it is not waited for.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	p := ProblemOf(w, r, err)
	stateOf(r.Context()).dropUnreadBody(w, r)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Del("Content-Length")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// ProblemOf is the problem Write answers err with, for a handler that
// answers it in another form (the console's HTML pages): it logs what
// Write logs and sets the headers Write sets (WWW-Authenticate,
// Retry-After) on w, but writes no body.
func ProblemOf(w http.ResponseWriter, r *http.Request, err error) Problem {
	st := stateOf(r.Context())
	log := st.log()
	p := Problem{Instance: r.URL.Path, RequestID: requestIDOf(st, w)}
	var retry time.Duration
	var typ string
	var e *Error
	var ve intake.ValidationError
	var mbe *http.MaxBytesError
	var budget *intake.MonthlyBudgetError
	switch {
	case errors.As(err, &e):
		p.Status, p.Detail, p.Errors, retry, typ = e.Status, e.Detail, e.Errors, e.RetryAfter, e.Type
		if p.Status >= 500 && p.Status != http.StatusServiceUnavailable && p.Status != http.StatusNotImplemented {
			log.ErrorContext(r.Context(), "request failed", "error", err, "request_id", p.RequestID,
				"method", r.Method, "path", r.URL.Path)
			p.Status, p.Detail, p.Errors, typ = http.StatusInternalServerError, internalDetail, nil, ""
		}
	case errors.As(err, &ve):
		p.Status, p.Detail, p.Errors = http.StatusUnprocessableEntity, ve.Error(), ve
	case errors.As(err, &mbe):
		p.Status, p.Detail = http.StatusRequestEntityTooLarge, fmt.Sprintf("body: must be at most %d bytes", mbe.Limit)
	case errors.As(err, &budget):
		// Retry-After: the time left until the next month (UTC).
		p.Status, p.Detail, retry, typ = http.StatusTooManyRequests, budget.Error(), budget.RetryAfter, intake.ProblemMonthlyBudget
	case errors.Is(err, store.ErrNotFound):
		p.Status, p.Detail = http.StatusNotFound, notFoundDetail(err)
	case errors.Is(err, store.ErrTerminal):
		p.Status, p.Detail = http.StatusConflict, "the build is already in a terminal status"
	case errors.Is(err, store.ErrConflict):
		p.Status, p.Detail = http.StatusConflict, err.Error()
	case errors.Is(err, intake.ErrIdempotencyMismatch):
		const rule = "already used with a different request body"
		p.Status, p.Detail = http.StatusUnprocessableEntity, "Idempotency-Key: "+rule
		p.Errors = []intake.FieldError{{Field: "Idempotency-Key", Rule: rule}}
	case errors.Is(err, intake.ErrForbidden):
		p.Status, p.Detail = http.StatusForbidden, "this token may not do that; an admin token is required"
	case errors.Is(err, auth.ErrInvalidToken):
		w.Header().Set("WWW-Authenticate", `Bearer realm="kiln", error="invalid_token"`)
		p.Status, p.Detail = http.StatusUnauthorized, "Authorization: the token is not valid"
	case store.IsUnavailable(err):
		log.WarnContext(r.Context(), "database unavailable", "error", err, "request_id", p.RequestID,
			"method", r.Method, "path", r.URL.Path)
		p.Status, p.Detail = http.StatusServiceUnavailable, unavailableDetail
	default:
		log.ErrorContext(r.Context(), "request failed", "error", err, "request_id", p.RequestID,
			"method", r.Method, "path", r.URL.Path)
		p.Status, p.Detail = http.StatusInternalServerError, internalDetail
	}
	if p.Status == http.StatusServiceUnavailable || p.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfter(retry))
	}
	p.Type, p.Title = cmp.Or(typ, ProblemType(p.Status)), http.StatusText(p.Status)
	return p
}

// Refuse answers status with detail: Write of Errorf(status, "%s", detail).
func Refuse(w http.ResponseWriter, r *http.Request, status int, detail string) {
	Write(w, r, &Error{Status: status, Detail: detail})
}

// retryAfter is d in whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// notFoundDetail keeps ids the caller gave but never long internal wording.
func notFoundDetail(err error) string {
	msg := err.Error()
	if len(msg) > 200 {
		return "not found"
	}
	return msg
}

// JSON answers v as JSON with status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fallbackLogger logs for requests that did not pass Requests.
func fallbackLogger() *slog.Logger { return slog.Default() }
