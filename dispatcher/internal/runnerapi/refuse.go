package runnerapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// refuse answers a post the store did not take: 409 for a terminal build,
// a cap problem for a cap, the usual answers otherwise. what names what was
// posted ("events", "artifacts").
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, what string, err error) {
	var ended *store.EndedError
	var capErr *store.CapError
	switch {
	case errors.As(err, &ended):
		edge.Refuse(w, r, http.StatusConflict, fmt.Sprintf("build is %s; %s are not accepted after the build ended", ended.Status, what))
	case errors.As(err, &capErr):
		s.log.WarnContext(r.Context(), "runner post over a per-build cap", "path", r.URL.Path, "cap", capErr.Cap,
			"limit", capErr.Limit, "have", capErr.Have, "add", capErr.Add)
		capProblem(w, r, capErr)
	default:
		s.fail(w, r, err)
	}
}

// capProblem answers a post past a per-build cap: 413 for bytes, 422 for a
// count, with problem type schema.ProblemRunnerCap so the runner knows to
// stop posting that kind without reading the detail.
func capProblem(w http.ResponseWriter, r *http.Request, e *store.CapError) {
	status, detail := http.StatusUnprocessableEntity, ""
	switch e.Cap {
	case store.CapEvents:
		detail = fmt.Sprintf("events: the build has %d events and may have at most %d (the per-build cap); this batch adds %d", e.Have, e.Limit, e.Add)
	case store.CapEventBytes:
		status = http.StatusRequestEntityTooLarge
		detail = fmt.Sprintf("events: the build's events hold %d bytes and may hold at most %d (the per-build cap); this batch adds %d", e.Have, e.Limit, e.Add)
	case store.CapArtifacts:
		detail = fmt.Sprintf("artifacts: the build has %d artifacts and may have at most %d (the per-build cap)", e.Have, e.Limit)
	default:
		status = http.StatusRequestEntityTooLarge
		detail = fmt.Sprintf("content: the build's artifacts hold %d bytes and may hold at most %d (the per-build cap); this one adds %d", e.Have, e.Limit, e.Add)
	}
	edge.Write(w, r, &edge.Error{Status: status, Type: schema.ProblemRunnerCap, Detail: detail})
}

// lateResult answers a result posted to a terminal build: 200 duplicate when
// it is the result that settled the build (settled is that one's digest);
// 200 not accepted when nothing settled the build and it had no result, so
// the runner's account (output, session, kept work) is kept as its result
// (lifecycle.KeepStoppedResult); 409 otherwise.
func (s *Server) lateResult(w http.ResponseWriter, r *http.Request, id string, status schema.Status, settled, digest []byte, res schema.BuildResult) {
	if settled != nil && bytes.Equal(settled, digest) {
		writeJSON(w, schema.ResultAck{Status: status, Accepted: true, Duplicate: true})
		return
	}
	if settled == nil {
		// Nothing settled it: the build was cancelled, or the watcher ended
		// it first. What the runner did is kept if the build has no result.
		kept, err := s.lifecycle.KeepStoppedResult(r.Context(), id, res)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if kept {
			writeJSON(w, schema.ResultAck{Status: status, Accepted: false})
			return
		}
	}
	s.log.WarnContext(r.Context(), "late result refused", "build_id", id, "status", status)
	edge.Refuse(w, r, http.StatusConflict, fmt.Sprintf("build is %s; it ended before this result came, which is not recorded", status))
}

// resultDigest identifies a result as posted (after repair): a retry of the
// same post has the same digest.
func resultDigest(res schema.BuildResult) []byte {
	b, _ := json.Marshal(res)
	sum := sha256.Sum256(b)
	return sum[:]
}
