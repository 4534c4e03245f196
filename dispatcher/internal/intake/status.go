package intake

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// statusTTL is how long a project seen taking builds is believed to still
// take them. A project that turns failed or deleting within it may get one
// more build accepted; the launcher then fails or cancels that build, so
// nothing waits forever (invariant 2), and DELETE forgets the entry at once.
const statusTTL = time.Second

// statusCache remembers which projects take builds, so a busy project's
// submissions do not each read its row.
type statusCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // project id → when it was seen taking builds
}

func newStatusCache() statusCache { return statusCache{seen: map[string]time.Time{}} }

func (c *statusCache) fresh(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.seen[id]
	return ok && time.Since(t) < statusTTL
}

func (c *statusCache) remember(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) > 10000 {
		clear(c.seen)
	}
	c.seen[id] = time.Now()
}

func (c *statusCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.seen, id)
}

// takesBuilds returns nil for a project that takes builds (ready or
// provisioning), an ErrConflict naming its status for a failed or deleting
// one, and ErrNotFound for none.
func (s *Service) takesBuilds(ctx context.Context, id string) error {
	if s.statuses.fresh(id) {
		return nil
	}
	st, err := store.ProjectStatusOf(ctx, s.Store.Pool, id)
	if err != nil {
		return err
	}
	switch st {
	case schema.ProjectReady, schema.ProjectProvisioning:
		s.statuses.remember(id)
		return nil
	case schema.ProjectFailed:
		return fmt.Errorf("project %s failed to provision: builds are refused; see GET /projects/%s: %w", id, id, store.ErrConflict)
	default:
		return fmt.Errorf("project %s is %s: builds are refused: %w", id, st, store.ErrConflict)
	}
}
