package intake

import (
	"context"
	"fmt"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// SubmitFollowup accepts a follow-up of build parentID: a new build on the
// parent's project, with parent_id naming it, whose runner continues the
// parent's agent session (or, with fallback fresh, starts one given the
// parent's prompt and output). It is accepted as SubmitBuild accepts a
// build (one transaction, Idempotency-Key, monthly budget), after these
// rules: a parent the principal may not see (or none) is store.ErrNotFound,
// as GetBuild answers it; spec is checked by ValidateFollowup; a parent
// not yet terminal is a store.ErrConflict naming its status, since a
// follow-up continues a finished build. A follow-up of a follow-up is a
// follow-up like any other.
func (s *Service) SubmitFollowup(ctx context.Context, who *auth.Principal, parentID string, spec schema.BuildSpec, idemKey string) (*Accepted, error) {
	parent, err := s.GetBuild(ctx, who, parentID)
	if err != nil {
		return nil, err
	}
	if err := ValidateFollowup(&spec, s.Templates); err != nil {
		return nil, err
	}
	if !parent.Status.Terminal() {
		return nil, fmt.Errorf("build %s is %s: a follow-up continues a finished build; submit it once the build ends: %w",
			parent.ID, parent.Status, store.ErrConflict)
	}
	return s.submit(ctx, who, &schema.Project{ID: parent.ProjectID}, spec, idemKey, parent.ID)
}

// Followups returns the ids of b's (from GetBuild) follow-ups, oldest first.
func (s *Service) Followups(ctx context.Context, b *store.Build) ([]string, error) {
	return store.ListFollowups(ctx, s.Store.Pool, b.ID)
}
