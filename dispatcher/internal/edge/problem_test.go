package edge_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// write answers err through Requests and Write, and returns the answer and the log.
func write(t *testing.T, err error, hdr ...string) (*httptest.ResponseRecorder, edge.Problem, string) {
	t.Helper()
	var logs bytes.Buffer
	h := edge.Requests(slog.New(slog.NewJSONHandler(&logs, nil)))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		edge.Write(w, r, err)
	}))
	req := httptest.NewRequest("GET", "/builds/x", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	var p edge.Problem
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p), rec.Body.String())
	return rec, p, logs.String()
}

func TestWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		kind       string
		detail     string
		retryAfter string
	}{
		{"bad request", edge.Errorf(400, "body: malformed"), 400, "malformed-request", "body: malformed", ""},
		{"unauthorized", auth.ErrInvalidToken, 401, "unauthorized", "Authorization: the token is not valid", ""},
		{"forbidden", intake.ErrForbidden, 403, "forbidden", "admin token is required", ""},
		{"not found", fmt.Errorf("build 1: %w", store.ErrNotFound), 404, "not-found", "build 1: not found", ""},
		{"no such id", edge.NoSuch("build", "urn:uuid:x"), 404, "not-found", `build "urn:uuid:x": not found`, ""},
		{"method", edge.Errorf(405, "method PUT is not allowed"), 405, "method-not-allowed", "PUT", ""},
		{"terminal", store.ErrTerminal, 409, "conflict", "terminal status", ""},
		{"conflict", fmt.Errorf("project web exists: %w", store.ErrConflict), 409, "conflict", "project web exists", ""},
		{"too large", edge.Errorf(413, "body: must be at most 1 bytes"), 413, "body-too-large", "at most 1 bytes", ""},
		{"max bytes", &http.MaxBytesError{Limit: 7}, 413, "body-too-large", "body: must be at most 7 bytes", ""},
		{"media type", edge.Errorf(415, "Content-Type: must be application/json"), 415, "unsupported-media-type", "Content-Type", ""},
		{"validation", intake.ValidationError{{Field: "prompt", Rule: "required"}}, 422, "validation-failed", "prompt: required", ""},
		{"idempotency", intake.ErrIdempotencyMismatch, 422, "validation-failed", "Idempotency-Key: already used", ""},
		{"rate", edge.TooManyRequests(2500*time.Millisecond, "slow down"), 429, "rate-limited", "slow down", "3"},
		{"rate without a time", edge.TooManyRequests(0, "slow down"), 429, "rate-limited", "slow down", "1"},
		{"unavailable", edge.Unavailable(5*time.Second, "later"), 503, "unavailable", "later", "5"},
		{"database down", fmt.Errorf("getting build: %w", &pgconn.PgError{Code: "08006"}), 503, "unavailable", "the database is unavailable", "1"},
		{"not implemented", edge.Errorf(501, "no streams here"), 501, "not-implemented", "no streams here", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, p, _ := write(t, tc.err)
			assert.Equal(t, tc.status, rec.Code)
			assert.Equal(t, tc.status, p.Status)
			assert.Equal(t, "https://kiln.dev/problems/"+tc.kind, p.Type)
			assert.Equal(t, http.StatusText(tc.status), p.Title)
			assert.Contains(t, p.Detail, tc.detail)
			assert.Equal(t, "/builds/x", p.Instance)
			assert.NotEmpty(t, p.RequestID)
			assert.Equal(t, rec.Header().Get("X-Request-Id"), p.RequestID)
			assert.Equal(t, tc.retryAfter, rec.Header().Get("Retry-After"))
		})
	}
	rec, p, _ := write(t, intake.ValidationError{{Field: "a", Rule: "x"}, {Field: "b", Rule: "y"}})
	assert.Equal(t, 422, rec.Code)
	assert.Equal(t, []intake.FieldError{{Field: "a", Rule: "x"}, {Field: "b", Rule: "y"}}, p.Errors, "every field is named")
	rec, _, _ = write(t, auth.ErrInvalidToken)
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`)
}

// A 500 never carries the internal message: the client gets the request
// id to quote, the log gets the message with that id.
func TestWriteInternalError(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		errors.New(`pq: password authentication failed for user "kiln" at 10.0.0.7`),
		&edge.Error{Status: 500, Detail: "pq: password authentication failed at 10.0.0.7"},
		&edge.Error{Status: 502, Detail: "upstream 10.0.0.7 said no", Err: errors.New("pq: password")},
	} {
		rec, p, logs := write(t, err, "X-Request-Id", "req-123")
		assert.Equal(t, 500, rec.Code)
		assert.Equal(t, "https://kiln.dev/problems/internal-error", p.Type)
		assert.Equal(t, "internal error; quote the request id when reporting it", p.Detail)
		assert.Empty(t, p.Errors)
		assert.Equal(t, "req-123", p.RequestID)
		assert.NotContains(t, rec.Body.String(), "10.0.0.7")
		assert.NotContains(t, rec.Body.String(), "pq:")
		assert.Contains(t, logs, `"request_id":"req-123"`)
		assert.Contains(t, logs, "10.0.0.7", "the message is logged")
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	var seen string
	h := edge.Requests(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = edge.RequestID(r.Context()) }))
	for in, kept := range map[string]bool{"trace-abc.1_2": true, "": false, "has space": false, "a\"b": false,
		strings.Repeat("x", 65): false, strings.Repeat("x", 64): true} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Request-Id", in)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, seen, rec.Header().Get("X-Request-Id"), "echoed")
		if kept {
			assert.Equal(t, in, seen)
		} else {
			assert.Regexp(t, `^[0-9a-f]{16}$`, seen, "%q is replaced by a fresh id", in)
		}
	}
}
