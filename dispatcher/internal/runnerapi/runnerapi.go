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
	"log/slog"
	"net/http"
	"path"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
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

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// authenticate lets a request through only with build {id}'s runner token.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := edge.PathID(r, "id")
		if !ok {
			edge.Write(w, r, edge.NoSuch("build", id))
			return
		}
		tok, ok := edge.BearerToken(r)
		if !ok {
			edge.Refuse(w, r, http.StatusUnauthorized, "Authorization: this build's runner token is required")
			return
		}
		good, err := store.CheckRunnerToken(r.Context(), s.pool, id, auth.Hash(tok))
		if err != nil {
			s.fail(w, r, fmt.Errorf("checking runner token: %w", err))
			return
		}
		if !good {
			edge.Refuse(w, r, http.StatusUnauthorized, "Authorization: not a runner token of this build")
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

// fail answers err through the edge: not found 404, database unreachable
// 503 with Retry-After, anything else a logged 500.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrNotFound) {
		err = edge.Errorf(http.StatusNotFound, "build not found")
	}
	edge.Write(w, r, err)
}

// decode reads a runner's body with the edge's strict decoder; agent
// output may carry NUL, which the handlers deal with.
func decode(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	if err := (edge.Body{MaxBytes: max, AllowNUL: true}).Decode(w, r, v); err != nil {
		edge.Write(w, r, err)
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
		edge.Refuse(w, r, http.StatusUnprocessableEntity, "batch: must be ≥ 1 with at most 1000 events")
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
		edge.Refuse(w, r, http.StatusUnprocessableEntity, "path: must be a clean relative path inside the workdir")
		return
	case int64(len(up.Content)) > max:
		edge.Refuse(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("content: must be at most %d bytes", max))
		return
	case int64(len(up.Content)) != up.Size:
		edge.Refuse(w, r, http.StatusUnprocessableEntity, fmt.Sprintf("size: %d does not match the content's %d bytes", up.Size, len(up.Content)))
		return
	}
	sum := sha256.Sum256(up.Content)
	if hex.EncodeToString(sum[:]) != strings.ToLower(up.SHA256) {
		edge.Refuse(w, r, http.StatusUnprocessableEntity, "sha256: does not match the content")
		return
	}
	if err := store.PutArtifact(r.Context(), s.pool, id, clean, hex.EncodeToString(sum[:]), up.Content); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, schema.Artifact{Name: path.Base(clean), Path: clean, Size: up.Size, SHA256: hex.EncodeToString(sum[:]),
		URL: schema.ArtifactURL(id, clean)})
}
