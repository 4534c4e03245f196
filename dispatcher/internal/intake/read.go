package intake

import (
	"context"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// The reads below serve the API's listings. Their build or project comes
// from GetBuild or GetProject, which have already checked that the principal
// may see it.

// ListProjects returns the projects the principal may see.
func (s *Service) ListProjects(ctx context.Context, who *auth.Principal) ([]*schema.Project, error) {
	return store.ListProjects(ctx, s.Store.Pool, scopeIDs(who))
}

// ListBuilds returns a page of summaries of the builds of the project
// p.ProjectID names (p comes from GetProject), and whether more follow.
func (s *Service) ListBuilds(ctx context.Context, p store.ListBuildsParams) ([]schema.BuildSummary, bool, error) {
	return store.ListBuildSummaries(ctx, s.Store.Pool, p)
}

// CallbackAttempts returns every callback attempt of b (from GetBuild), oldest first.
func (s *Service) CallbackAttempts(ctx context.Context, b *store.Build) ([]schema.CallbackAttempt, error) {
	return store.ListCallbackAttempts(ctx, s.Store.Pool, b.ID)
}

// GetArtifact returns the content and SHA-256 of b's (from GetBuild) artifact at path.
func (s *Service) GetArtifact(ctx context.Context, b *store.Build, path string) ([]byte, string, error) {
	return store.GetArtifact(ctx, s.Store.Pool, b.ID, path)
}
