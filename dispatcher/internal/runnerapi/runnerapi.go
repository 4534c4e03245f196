// Package runnerapi is the dispatcher's side of the runner protocol
// (schema/runner.go): the jobrunner of a build fetches its task, posts event
// batches and posts its result, authenticated by that build's runner token
// and for that build only. It is not part of the bots' API.
package runnerapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Limits on what a runner may post.
const (
	MaxBatchBytes  = 4 << 20
	MaxBatchEvents = 1000
	MaxResultBytes = 1 << 20
	MaxOutputBytes = 256 << 10
	// DefaultMaxArtifactBytes bounds one uploaded artifact.
	DefaultMaxArtifactBytes = 10 << 20
)

// Server serves the runner protocol.
type Server struct {
	Pool      *pgxpool.Pool
	Lifecycle *lifecycle.Lifecycle
	Logger    *slog.Logger
	// MaxArtifactBytes bounds one artifact; default DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// OnResult is told of every accepted result (metrics, wake-ups); may be nil.
	OnResult func(b *store.Build)
}

// Mount adds the runner routes to r.
func (s *Server) Mount(r chi.Router) {
	r.Route("/runner/v1/builds/{id}", func(r chi.Router) {
		r.Use(s.authenticate)
		r.Get("/", s.task)
		r.Post("/events", s.events)
		r.Post("/result", s.result)
		r.Post("/artifacts", s.artifact)
	})
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// authenticate lets a request through only with build {id}'s runner token.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if _, err := uuid.Parse(id); err != nil || !ok || tok == "" {
			problem(w, http.StatusUnauthorized, "Authorization: this build's runner token is required")
			return
		}
		good, err := store.CheckRunnerToken(r.Context(), s.Pool, id, auth.Hash(tok))
		if err != nil {
			s.fail(w, r, fmt.Errorf("checking runner token: %w", err))
			return
		}
		if !good {
			problem(w, http.StatusUnauthorized, "Authorization: not a runner token of this build")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	b, err := store.GetBuild(ctx, s.Pool, chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := store.GetProject(ctx, s.Pool, b.ProjectID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, schema.RunnerTask{BuildID: b.ID, ProjectID: b.ProjectID, Spec: b.Spec, Status: b.Status, Target: schema.TargetOf(p)})
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrNotFound) {
		problem(w, http.StatusNotFound, "build not found")
		return
	}
	if store.IsUnavailable(err) {
		s.logger().WarnContext(r.Context(), "runner request: database unavailable", "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "the database is unavailable for a moment; retry")
		return
	}
	s.logger().ErrorContext(r.Context(), "runner request failed", "path", r.URL.Path, "error", err)
	problem(w, http.StatusInternalServerError, "internal error")
}

func decode(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		problem(w, http.StatusRequestEntityTooLarge, "body: too large")
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		problem(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	var batch schema.EventBatch
	if !decode(w, r, MaxBatchBytes, &batch) {
		return
	}
	if batch.Batch < 1 || len(batch.Events) > MaxBatchEvents {
		problem(w, http.StatusUnprocessableEntity, "batch: must be ≥ 1 with at most 1000 events")
		return
	}
	var ack schema.EventBatchAck
	err := pgx.BeginFunc(r.Context(), s.Pool, func(tx pgx.Tx) error {
		var err error
		ack.Stored, ack.Duplicate, err = store.AppendBatch(r.Context(), tx, id, batch.Batch, batch.Events)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := store.GetBuild(r.Context(), s.Pool, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ack.Status = b.Status
	writeJSON(w, ack)
}

func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	var res schema.BuildResult
	if !decode(w, r, MaxResultBytes, &res) {
		return
	}
	ack, err := s.Accept(r.Context(), id, res, "runner")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, ack)
}

// Accept applies a result to a build: completed when it succeeded, failed
// otherwise; a runner that stopped on SIGTERM (cancelled: true) settles
// nothing. A build already
// terminal keeps its status (docs/design.md, invariant 4); the late result is
// logged and ignored.
func (s *Server) Accept(ctx context.Context, id string, res schema.BuildResult, source string) (schema.ResultAck, error) {
	if len(res.Output) > MaxOutputBytes {
		res.Output = res.Output[:MaxOutputBytes] + "\n[output truncated]"
	}
	if res.Cancelled {
		// The runner stopped on SIGTERM. If the build was cancelled it is
		// terminal already; otherwise the Job was stopped for a reason only
		// the cluster knows (deadline, deletion), which the watcher records.
		cur, err := store.GetBuild(ctx, s.Pool, id)
		if err != nil {
			return schema.ResultAck{}, err
		}
		s.logger().InfoContext(ctx, "runner reported it stopped; the watcher settles the build", "build_id", id, "status", cur.Status)
		return schema.ResultAck{Status: cur.Status, Accepted: false}, nil
	}
	t := store.Transition{To: schema.StatusFailed, Result: &res, Error: res.Error,
		From: []schema.Status{schema.StatusRunning, schema.StatusPending}}
	switch {
	case res.Success:
		t.To, t.Error = schema.StatusCompleted, ""
	case t.Error == "":
		t.Error = "the runner reported failure without an error message"
	}
	b, err := s.Lifecycle.TransitionNow(ctx, s.Pool, id, t)
	if errors.Is(err, store.ErrTerminal) {
		cur, gerr := store.GetBuild(ctx, s.Pool, id)
		if gerr != nil {
			return schema.ResultAck{}, gerr
		}
		s.logger().WarnContext(ctx, "late or duplicate result ignored", "build_id", id, "status", cur.Status, "source", source)
		return schema.ResultAck{Status: cur.Status, Accepted: false}, nil
	}
	if err != nil {
		return schema.ResultAck{}, err
	}
	s.logger().InfoContext(ctx, "build finished", "build_id", id, "status", b.Status, "source", source)
	if s.OnResult != nil {
		s.OnResult(b)
	}
	return schema.ResultAck{Status: b.Status, Accepted: true}, nil
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	max := s.MaxArtifactBytes
	if max <= 0 {
		max = DefaultMaxArtifactBytes
	}
	var up schema.ArtifactUpload
	if !decode(w, r, max*4/3+4096, &up) {
		return
	}
	clean := path.Clean(up.Path)
	switch {
	case up.Path == "" || clean != up.Path || path.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, "../") || clean == "..":
		problem(w, http.StatusUnprocessableEntity, "path: must be a clean relative path inside the workdir")
		return
	case int64(len(up.Content)) > max:
		problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("content: must be at most %d bytes", max))
		return
	case int64(len(up.Content)) != up.Size:
		problem(w, http.StatusUnprocessableEntity, fmt.Sprintf("size: %d does not match the content's %d bytes", up.Size, len(up.Content)))
		return
	}
	sum := sha256.Sum256(up.Content)
	if hex.EncodeToString(sum[:]) != strings.ToLower(up.SHA256) {
		problem(w, http.StatusUnprocessableEntity, "sha256: does not match the content")
		return
	}
	if err := store.PutArtifact(r.Context(), s.Pool, id, clean, hex.EncodeToString(sum[:]), up.Content); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, schema.Artifact{Name: path.Base(clean), Path: clean, Size: up.Size, SHA256: hex.EncodeToString(sum[:]),
		URL: schema.ArtifactURL(id, clean)})
}
