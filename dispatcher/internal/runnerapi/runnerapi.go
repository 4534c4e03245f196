// Package runnerapi is the dispatcher's side of the runner protocol
// (schema/runner.go): the jobrunner of a build fetches its task, posts event
// batches, artifacts and its result, authenticated by that build's runner
// token and for that build only. A follow-up's task carries what its runner
// needs of the parent build (FollowupOf). It holds up against a broken or hostile
// runner: only a runner's event types, each of its payload type's shape
// (ValidateEvents, a pure function); text Postgres cannot store repaired
// and flagged rather than refused; 409 once the build is terminal; per-build
// caps; a token that stops working after the build ends. It is not part of
// the bots' API, and status changes are the lifecycle's.
package runnerapi

import (
	"bytes"
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
	"time"
	"unicode/utf8"

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

// Defaults of the per-build caps and of the runner token's grace.
const (
	DefaultMaxEventsPerBuild        = 100_000
	DefaultMaxEventBytesPerBuild    = 64 << 20
	DefaultMaxArtifactsPerBuild     = 100
	DefaultMaxArtifactBytesPerBuild = 100 << 20
	DefaultTokenGrace               = 5 * time.Minute
)

// Options configures New.
type Options struct {
	Pool      *pgxpool.Pool        // required
	Lifecycle *lifecycle.Lifecycle // required: results are applied through it
	// MaxArtifactBytes bounds one artifact; default DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// MaxEventsPerBuild caps the events a build's runner may post (422
	// beyond); default DefaultMaxEventsPerBuild (100000).
	MaxEventsPerBuild int64
	// MaxEventBytesPerBuild caps the bytes of their stored payloads (413
	// beyond); default DefaultMaxEventBytesPerBuild (64 MiB).
	MaxEventBytesPerBuild int64
	// MaxArtifactsPerBuild caps a build's artifacts (422 beyond); default
	// DefaultMaxArtifactsPerBuild (100).
	MaxArtifactsPerBuild int64
	// MaxArtifactBytesPerBuild caps the bytes of a build's artifacts (413
	// beyond); default DefaultMaxArtifactBytesPerBuild (100 MiB).
	MaxArtifactBytesPerBuild int64
	// TokenGrace is how long after its build ended a runner token still
	// authenticates (to be told 409, or that its retried result was
	// accepted); then it answers 401. Default DefaultTokenGrace (5m).
	TokenGrace time.Duration
	Logger     *slog.Logger // default: discard
}

// Server serves the runner protocol.
type Server struct {
	pool        *pgxpool.Pool
	lifecycle   *lifecycle.Lifecycle
	maxArtifact int64
	eventCaps   store.EventCaps
	artCaps     store.ArtifactCaps
	grace       time.Duration
	log         *slog.Logger
}

// New returns a Server; Mount adds its routes to a router.
func New(o Options) (*Server, error) {
	if o.Pool == nil || o.Lifecycle == nil {
		return nil, errors.New("runnerapi: Pool and Lifecycle are required")
	}
	if o.MaxArtifactBytes < 0 || o.MaxEventsPerBuild < 0 || o.MaxEventBytesPerBuild < 0 || o.MaxArtifactsPerBuild < 0 ||
		o.MaxArtifactBytesPerBuild < 0 || o.TokenGrace < 0 {
		return nil, errors.New("runnerapi: limits and TokenGrace must not be negative")
	}
	return &Server{pool: o.Pool, lifecycle: o.Lifecycle, maxArtifact: cmp.Or(o.MaxArtifactBytes, DefaultMaxArtifactBytes),
		eventCaps: store.EventCaps{MaxEvents: cmp.Or(o.MaxEventsPerBuild, DefaultMaxEventsPerBuild),
			MaxBytes: cmp.Or(o.MaxEventBytesPerBuild, DefaultMaxEventBytesPerBuild)},
		artCaps: store.ArtifactCaps{MaxArtifacts: cmp.Or(o.MaxArtifactsPerBuild, DefaultMaxArtifactsPerBuild),
			MaxBytes: cmp.Or(o.MaxArtifactBytesPerBuild, DefaultMaxArtifactBytesPerBuild)},
		grace: cmp.Or(o.TokenGrace, DefaultTokenGrace),
		log:   cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "runnerapi")}, nil
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

// authenticate lets a request through only with build {id}'s runner token,
// while the build is active and for the token's grace after its end.
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
		rt, err := store.RunnerTokenOf(r.Context(), s.pool, id, auth.Hash(tok), s.grace)
		if err != nil {
			s.fail(w, r, fmt.Errorf("checking runner token: %w", err))
			return
		}
		if !rt.Match {
			edge.Refuse(w, r, http.StatusUnauthorized, "Authorization: not a runner token of this build")
			return
		}
		if rt.EndedBefore {
			edge.Refuse(w, r, http.StatusUnauthorized, fmt.Sprintf("Authorization: the build is %s; its runner token stopped working when it ended", rt.Status))
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
	task := schema.RunnerTask{BuildID: b.ID, ProjectID: b.ProjectID, Spec: b.Spec, Status: b.Status, Target: schema.TargetOf(p)}
	if b.ParentID != "" {
		parent, err := store.GetBuild(ctx, s.pool, b.ParentID)
		if err != nil {
			s.fail(w, r, fmt.Errorf("reading build %s's parent %s: %w", b.ID, b.ParentID, err))
			return
		}
		task.Followup = FollowupOf(parent, b.Spec.Fallback)
	}
	writeJSON(w, task)
}

// FollowupOf is what a follow-up's runner is told of its parent build: the
// parent's agent session, prompt and output (each cut to
// schema.FollowupContextBytes, on a rune boundary) and its kept work.
func FollowupOf(parent *store.Build, fallback schema.Fallback) *schema.FollowupTask {
	f := &schema.FollowupTask{ParentID: parent.ID, Fallback: fallback,
		ParentPrompt: cutUTF8(parent.Spec.Prompt, schema.FollowupContextBytes)}
	if res := parent.Result; res != nil {
		f.SessionID = res.SessionID
		f.ParentOutput = cutUTF8(res.Output, schema.FollowupContextBytes)
		f.PartialBranch, f.PartialCommitSHA = res.PartialBranch, res.PartialCommitSHA
	}
	return f
}

// cutUTF8 returns at most max bytes of s, cut at a rune boundary, with any
// invalid UTF-8 replaced (stored text is valid already; this keeps the
// promise whatever the row holds).
func cutUTF8(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
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
// output may carry NUL and invalid UTF-8, which the handlers repair.
func decode(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	if err := (edge.Body{MaxBytes: max, AllowNUL: true, AllowInvalidUTF8: true}).Decode(w, r, v); err != nil {
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
	events, repaired, verr := ValidateEvents(batch.Events)
	if verr != nil {
		edge.Refuse(w, r, http.StatusUnprocessableEntity, verr.Error())
		return
	}
	var res store.BatchResult
	err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		var err error
		res, err = store.AppendBatch(r.Context(), tx, id, batch.Batch, events, s.eventCaps)
		return err
	})
	if err != nil {
		s.refuse(w, r, "events", err)
		return
	}
	if repaired > 0 && res.Stored > 0 {
		s.log.WarnContext(r.Context(), "runner events held text Postgres cannot store; stored with U+FFFD and flagged",
			"build_id", id, "batch", batch.Batch, "events", repaired)
	}
	writeJSON(w, schema.EventBatchAck{Stored: res.Stored, Duplicate: res.Duplicate, Status: res.Status})
}

func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	var raw bytes.Buffer
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.TeeReader(r.Body, &raw), r.Body}
	var res schema.BuildResult
	if !decode(w, r, MaxResultBytes, &res) {
		return
	}
	repaired := repairResult(raw.Bytes(), &res)
	digest := resultDigest(res)
	settled, status, err := store.ResultDigest(r.Context(), s.pool, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if status.Terminal() {
		s.lateResult(w, r, id, status, settled, digest, res)
		return
	}
	if len(repaired) > 0 && !res.Cancelled { // a stopped runner's result is not stored
		msg := fmt.Sprintf("the runner's result held text Postgres cannot store (NUL or invalid UTF-8) in %s; "+
			"each such character is stored as U+FFFD", strings.Join(repaired, ", "))
		if _, err := store.AppendEvent(r.Context(), s.pool, id, schema.EventInfo, schema.InfoPayload{Message: msg}); err != nil {
			s.fail(w, r, err)
			return
		}
		s.log.WarnContext(r.Context(), "runner result repaired", "build_id", id, "fields", repaired)
	}
	ack, err := s.lifecycle.Finish(r.Context(), id, res, "runner")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case ack.Accepted:
		if err := store.SetResultDigest(r.Context(), s.pool, id, digest); err != nil {
			// The build is settled; only a retry of this result would miss it (409).
			s.log.WarnContext(r.Context(), "recording the result's digest", "build_id", id, "error", err)
		}
	case ack.Status.Terminal():
		// The build ended between the check and Finish.
		s.lateResult(w, r, id, ack.Status, nil, digest, res)
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
	case strings.IndexByte(up.Path, 0) >= 0:
		edge.Refuse(w, r, http.StatusUnprocessableEntity, "path: must not contain NUL (a path must be exact)")
		return
	case !utf8.ValidString(up.Path) || strings.ContainsRune(up.Path, utf8.RuneError):
		edge.Refuse(w, r, http.StatusUnprocessableEntity, "path: must be valid UTF-8 (a path must be exact)")
		return
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
	err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		return store.PutArtifact(r.Context(), tx, id, clean, hex.EncodeToString(sum[:]), up.Content, s.artCaps)
	})
	if err != nil {
		s.refuse(w, r, "artifacts", err)
		return
	}
	writeJSON(w, schema.Artifact{Name: path.Base(clean), Path: clean, Size: up.Size, SHA256: hex.EncodeToString(sum[:]),
		URL: schema.ArtifactURL(id, clean)})
}
