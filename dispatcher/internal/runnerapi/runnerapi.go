// Package runnerapi is the dispatcher's side of the runner protocol
// (schema/runner.go): the jobrunner of a build fetches its task, posts event
// batches and posts its result, authenticated by that build's runner token
// and for that build only. It is not part of the bots' API.
package runnerapi

import (
	"cmp"
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
	// DefaultMaxArtifactBytes bounds one uploaded artifact.
	DefaultMaxArtifactBytes = 10 << 20
)

// Options configures New.
type Options struct {
	Pool      *pgxpool.Pool        // required
	Lifecycle *lifecycle.Lifecycle // required: results are applied through it
	// MaxArtifactBytes bounds one artifact; default DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	Logger           *slog.Logger // default: discard
}

// Server serves the runner protocol.
type Server struct {
	pool        *pgxpool.Pool
	lifecycle   *lifecycle.Lifecycle
	maxArtifact int64
	log         *slog.Logger
}

// New returns a Server; Mount adds its routes to a router.
func New(o Options) (*Server, error) {
	if o.Pool == nil || o.Lifecycle == nil {
		return nil, errors.New("runnerapi: Pool and Lifecycle are required")
	}
	if o.MaxArtifactBytes < 0 {
		return nil, errors.New("runnerapi: MaxArtifactBytes must not be negative")
	}
	return &Server{pool: o.Pool, lifecycle: o.Lifecycle, maxArtifact: cmp.Or(o.MaxArtifactBytes, DefaultMaxArtifactBytes),
		log: cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "runnerapi")}, nil
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
		good, err := store.CheckRunnerToken(r.Context(), s.pool, id, auth.Hash(tok))
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
	b, err := store.GetBuild(ctx, s.pool, chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := store.GetProject(ctx, s.pool, b.ProjectID)
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
		s.log.WarnContext(r.Context(), "runner request: database unavailable", "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "the database is unavailable for a moment; retry")
		return
	}
	s.log.ErrorContext(r.Context(), "runner request failed", "path", r.URL.Path, "error", err)
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
	err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		var err error
		ack.Stored, ack.Duplicate, err = store.AppendBatch(r.Context(), tx, id, batch.Batch, batch.Events)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := store.GetBuild(r.Context(), s.pool, id)
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
	ack, err := s.lifecycle.Finish(r.Context(), id, res, "runner")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, ack)
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	max := s.maxArtifact
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
	if err := store.PutArtifact(r.Context(), s.pool, id, clean, hex.EncodeToString(sum[:]), up.Content); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, schema.Artifact{Name: path.Base(clean), Path: clean, Size: up.Size, SHA256: hex.EncodeToString(sum[:]),
		URL: schema.ArtifactURL(id, clean)})
}
