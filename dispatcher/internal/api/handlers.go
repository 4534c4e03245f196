package api

import (
	"net/http"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/schema"
)

// MaxIdempotencyKeyLen bounds the Idempotency-Key header, in bytes.
const MaxIdempotencyKeyLen = 255

// MaxBodyBytes bounds the body of a build submission (and of
// create-and-build); the other routes take less.
const MaxBodyBytes = 1 << 20

// The bodies the routes accept, with their limits.
var (
	specBody    = edge.Body{MaxBytes: MaxBodyBytes} // a BuildSpec; create-and-build
	projectBody = edge.Body{MaxBytes: 512 << 10}    // a ProjectInput (credentials, env and secret_env)
	cancelBody  = edge.Body{MaxBytes: 8 << 10}      // a reason of at most 1024 bytes, escaped
)

// pathID returns the canonical id in path parameter name, or answers 404 for what.
func pathID(w http.ResponseWriter, r *http.Request, name, what string) (string, bool) {
	id, ok := edge.PathID(r, name)
	if !ok {
		edge.Write(w, r, edge.NoSuch(what, id))
	}
	return id, ok
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	var in schema.ProjectInput
	if err := projectBody.Decode(w, r, &in); err != nil {
		edge.Write(w, r, err)
		return
	}
	p, err := s.intake.CreateProject(r.Context(), edge.Principal(r.Context()), in)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	w.Header().Set("Location", "/projects/"+p.ID)
	status := http.StatusCreated
	if p.Managed { // provisioning: GET the Location to follow it
		status = http.StatusAccepted
	}
	edge.JSON(w, status, p)
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id", "project")
	if !ok {
		return
	}
	p, err := s.intake.RetireProject(r.Context(), edge.Principal(r.Context()), id)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	w.Header().Set("Location", "/projects/"+p.ID)
	edge.JSON(w, http.StatusAccepted, p)
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	ps, err := s.intake.ListProjects(r.Context(), edge.Principal(r.Context()))
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	edge.JSON(w, http.StatusOK, map[string]any{"projects": ps})
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id", "project")
	if !ok {
		return
	}
	p, err := s.intake.GetProject(r.Context(), edge.Principal(r.Context()), id)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	if p.Spend, err = s.intake.ProjectSpend(r.Context(), p); err != nil {
		edge.Write(w, r, err)
		return
	}
	edge.JSON(w, http.StatusOK, p)
}

func (s *Server) submitBuild(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id", "project")
	if !ok {
		return
	}
	// The project is not read first: the insert's foreign key finds an
	// unknown one, which saves a round trip on the hot path.
	s.submit(w, r, &schema.Project{ID: id})
}

func (s *Server) submitBuildByName(w http.ResponseWriter, r *http.Request) {
	name, ok := edge.PathText(r, "name")
	if !ok {
		edge.Write(w, r, edge.NoSuch("project", name))
		return
	}
	p, err := s.intake.GetProjectByName(r.Context(), edge.Principal(r.Context()), name)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	s.submit(w, r, p)
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request, p *schema.Project) {
	s.accept(w, r, func(spec schema.BuildSpec, key string) (*intake.Accepted, error) {
		return s.intake.SubmitBuild(r.Context(), edge.Principal(r.Context()), p, spec, key)
	})
}

func (s *Server) submitFollowup(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "taskId", "build")
	if !ok {
		return
	}
	s.accept(w, r, func(spec schema.BuildSpec, key string) (*intake.Accepted, error) {
		return s.intake.SubmitFollowup(r.Context(), edge.Principal(r.Context()), id, spec, key)
	})
}

// accept reads a submission's Idempotency-Key and BuildSpec, has submit
// accept them and answers 202 with the build's Location.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, submit func(schema.BuildSpec, string) (*intake.Accepted, error)) {
	key, err := edge.HeaderText(r, "Idempotency-Key", MaxIdempotencyKeyLen)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	var spec schema.BuildSpec
	if err := specBody.Decode(w, r, &spec); err != nil {
		edge.Write(w, r, err)
		return
	}
	acc, err := submit(spec, key)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	if acc.Replay {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/builds/"+acc.Build.ID)
	edge.JSON(w, http.StatusAccepted, s.accepted(acc))
}

// accepted is the 202 body of an accepted build.
func (s *Server) accepted(acc *intake.Accepted) schema.BuildAccepted {
	return schema.BuildAccepted{TaskID: acc.Build.ID, Status: acc.Build.Status,
		ConsoleURL: schema.ConsoleURL(s.publicURL, acc.Build.ID)}
}

// createAndBuildAccepted is the 202 body of POST /project/create-and-build.
type createAndBuildAccepted struct {
	schema.BuildAccepted
	Project *schema.Project `json:"project"`
}

func (s *Server) createAndBuild(w http.ResponseWriter, r *http.Request) {
	var in schema.CreateAndBuild
	if err := specBody.Decode(w, r, &in); err != nil {
		edge.Write(w, r, err)
		return
	}
	acc, err := s.intake.CreateAndBuild(r.Context(), edge.Principal(r.Context()), in)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	w.Header().Set("Location", "/builds/"+acc.Build.ID)
	edge.JSON(w, http.StatusAccepted, createAndBuildAccepted{
		BuildAccepted: s.accepted(acc),
		Project:       acc.Project,
	})
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "taskId", "build")
	if !ok {
		return
	}
	b, err := s.intake.GetBuild(r.Context(), edge.Principal(r.Context()), id)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	if b.Callbacks, err = s.intake.CallbackAttempts(r.Context(), b); err != nil {
		edge.Write(w, r, err)
		return
	}
	if b.Followups, err = s.intake.Followups(r.Context(), b); err != nil {
		edge.Write(w, r, err)
		return
	}
	b.ConsoleURL = schema.ConsoleURL(s.publicURL, b.ID)
	edge.JSON(w, http.StatusOK, b.Build)
}

// cancelRequest is the optional body of POST /builds/{taskId}/cancel.
type cancelRequest struct {
	Reason string `json:"reason"`
}

func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "taskId", "build")
	if !ok {
		return
	}
	var in cancelRequest
	if r.ContentLength != 0 && r.Header.Get("Content-Type") != "" {
		if err := cancelBody.Decode(w, r, &in); err != nil {
			edge.Write(w, r, err)
			return
		}
	}
	if len(in.Reason) > 1024 {
		edge.Write(w, r, edge.Field(http.StatusUnprocessableEntity, "reason", "must be at most 1024 bytes"))
		return
	}
	b, err := s.intake.Cancel(r.Context(), edge.Principal(r.Context()), id, in.Reason)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	b.ConsoleURL = schema.ConsoleURL(s.publicURL, b.ID)
	edge.JSON(w, http.StatusOK, b.Build)
}

// buildList is the body of GET /projects/{id}/builds.
type buildList struct {
	Builds     []schema.BuildSummary `json:"builds"`
	NextCursor string                `json:"next_cursor,omitempty"`
}

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id", "project")
	if !ok {
		return
	}
	p, err := s.intake.GetProject(r.Context(), edge.Principal(r.Context()), id)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	params, err := intake.ListQuery(p.ID, r.URL.Query())
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	page, err := s.intake.ListBuildPage(r.Context(), params)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	edge.JSON(w, http.StatusOK, buildList{Builds: page.Builds, NextCursor: page.NextCursor})
}

func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "taskId", "build")
	if !ok {
		return
	}
	b, err := s.intake.GetBuild(r.Context(), edge.Principal(r.Context()), id)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	p, ok := edge.PathText(r, "*")
	if !ok {
		edge.Write(w, r, edge.NoSuch("artifact", p))
		return
	}
	content, sha, err := s.intake.GetArtifact(r.Context(), b, p)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	edge.Attachment(w, p, sha, content)
}
