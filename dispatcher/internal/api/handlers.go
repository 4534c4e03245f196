package api

import (
	"encoding/base64"
	"encoding/hex"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 255

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	var in schema.ProjectInput
	if err := decodeJSON(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := s.intake.CreateProject(r.Context(), principal(r.Context()), in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/projects/"+p.ID)
	writeJSON(w, http.StatusCreated, p)
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	ps, err := s.intake.ListProjects(r.Context(), principal(r.Context()))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"projects": ps})
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	p, err := s.intake.GetProject(r.Context(), principal(r.Context()), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) submitBuild(w http.ResponseWriter, r *http.Request) {
	// The project is not read first: the insert's foreign key finds an
	// unknown one, which saves a round trip on the hot path.
	s.submit(w, r, &schema.Project{ID: chi.URLParam(r, "id")})
}

func (s *Server) submitBuildByName(w http.ResponseWriter, r *http.Request) {
	p, err := s.intake.GetProjectByName(r.Context(), principal(r.Context()), chi.URLParam(r, "name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.submit(w, r, p)
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request, p *schema.Project) {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > MaxIdempotencyKeyLen {
		s.writeError(w, r, fieldProblem(http.StatusBadRequest, "Idempotency-Key", "must be at most 255 characters"))
		return
	}
	var spec schema.BuildSpec
	if err := decodeJSON(w, r, &spec); err != nil {
		s.writeError(w, r, err)
		return
	}
	acc, err := s.intake.SubmitBuild(r.Context(), principal(r.Context()), p, spec, key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if acc.Replay {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/builds/"+acc.Build.ID)
	writeJSON(w, http.StatusAccepted, schema.BuildAccepted{TaskID: acc.Build.ID, Status: acc.Build.Status})
}

// createAndBuildAccepted is the 202 body of POST /project/create-and-build.
type createAndBuildAccepted struct {
	schema.BuildAccepted
	Project *schema.Project `json:"project"`
}

func (s *Server) createAndBuild(w http.ResponseWriter, r *http.Request) {
	var in schema.CreateAndBuild
	if err := decodeJSON(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	acc, err := s.intake.CreateAndBuild(r.Context(), principal(r.Context()), in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/builds/"+acc.Build.ID)
	writeJSON(w, http.StatusAccepted, createAndBuildAccepted{
		BuildAccepted: schema.BuildAccepted{TaskID: acc.Build.ID, Status: acc.Build.Status},
		Project:       acc.Project,
	})
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	b, err := s.intake.GetBuild(r.Context(), principal(r.Context()), chi.URLParam(r, "taskId"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if b.Callbacks, err = s.intake.CallbackAttempts(r.Context(), b); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b.Build)
}

// cancelRequest is the optional body of POST /builds/{taskId}/cancel.
type cancelRequest struct {
	Reason string `json:"reason"`
}

func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request) {
	var in cancelRequest
	if r.ContentLength != 0 && r.Header.Get("Content-Type") != "" {
		if err := decodeJSON(w, r, &in); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if len(in.Reason) > 1024 {
		s.writeError(w, r, fieldProblem(http.StatusUnprocessableEntity, "reason", "must be at most 1024 bytes"))
		return
	}
	b, err := s.intake.Cancel(r.Context(), principal(r.Context()), chi.URLParam(r, "taskId"), in.Reason)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, b.Build)
}

// buildList is the body of GET /projects/{id}/builds.
type buildList struct {
	Builds     []schema.BuildSummary `json:"builds"`
	NextCursor string                `json:"next_cursor,omitempty"`
}

// listPageBytes bounds the summaries of one page of GET /projects/{id}/builds;
// a page that would pass it ends early, with a next_cursor.
const listPageBytes = 1 << 20

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request) {
	p, err := s.intake.GetProject(r.Context(), principal(r.Context()), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	params := store.ListBuildsParams{ProjectID: p.ID, Limit: 20}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			s.writeError(w, r, fieldProblem(http.StatusUnprocessableEntity, "limit", "must be an integer from 1 to 100"))
			return
		}
		params.Limit = n
	}
	if v := q.Get("status"); v != "" {
		if !schema.Status(v).Valid() {
			s.writeError(w, r, fieldProblem(http.StatusUnprocessableEntity, "status",
				"must be one of pending, running, completed, failed, cancelled"))
			return
		}
		params.Status = schema.Status(v)
	}
	if v := q.Get("cursor"); v != "" {
		id, ok := decodeCursor(v)
		if !ok {
			s.writeError(w, r, fieldProblem(http.StatusUnprocessableEntity, "cursor", "is not a cursor this API returned"))
			return
		}
		params.Before = id
	}
	params.MaxBytes = listPageBytes
	bs, more, err := s.intake.ListBuilds(r.Context(), params)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := buildList{Builds: bs}
	if more {
		out.NextCursor = encodeCursor(bs[len(bs)-1].ID)
	}
	writeJSON(w, http.StatusOK, out)
}

func encodeCursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("b:" + id))
}

func decodeCursor(c string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	id, ok := strings.CutPrefix(string(b), "b:")
	if _, err := uuid.Parse(id); !ok || err != nil {
		return "", false
	}
	return id, true
}

func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) {
	b, err := s.intake.GetBuild(r.Context(), principal(r.Context()), chi.URLParam(r, "taskId"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p := chi.URLParam(r, "*")
	content, sha, err := s.intake.GetArtifact(r.Context(), b, p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	w.Header().Set("Digest", "sha-256="+base64.StdEncoding.EncodeToString(mustHex(sha)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(content)
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}
