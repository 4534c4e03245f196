package intake

import (
	"context"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// ActiveCounts returns the running and pending counts of the projects the
// principal may see, by project id (a project with none is absent).
func (s *Service) ActiveCounts(ctx context.Context, who *auth.Principal) (map[string]store.ActiveCounts, error) {
	return store.CountActive(ctx, s.Store.Pool, scopeIDs(who))
}

// ProjectSpends returns what the builds of the projects the principal may
// see spent this calendar month (UTC), by project id; a project that spent
// nothing is absent.
func (s *Service) ProjectSpends(ctx context.Context, who *auth.Principal) (map[string]schema.ProjectSpend, error) {
	return store.ProjectSpends(ctx, s.Store.Pool, scopeIDs(who), s.now())
}

// Overview returns the builds submitted since since in the projects the
// principal may see, per hour and with their durations by template.
func (s *Service) Overview(ctx context.Context, who *auth.Principal, since, now time.Time) (*store.Overview, error) {
	return store.ReadOverview(ctx, s.Store.Pool, scopeIDs(who), since, now)
}

// scopeIDs is who's projects, never nil for a project token (a token of no
// project sees none, not all).
func scopeIDs(who *auth.Principal) []string {
	ids := who.Scope()
	if !who.Admin && ids == nil {
		return []string{}
	}
	return ids
}
