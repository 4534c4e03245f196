package auth

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// TokenPrefix starts every API token, so leaked tokens are easy to scan for.
const TokenPrefix = "kiln_"

// ErrInvalidToken is returned for a missing, unknown or revoked token.
var ErrInvalidToken = errors.New("invalid token")

// Principal is who a request acts as.
type Principal struct {
	TokenID  string
	Name     string
	Admin    bool
	Projects []string // project ids; ignored for admins
}

// CanSee reports whether p may act on the project with id.
func (p *Principal) CanSee(projectID string) bool {
	return p.Admin || slices.Contains(p.Projects, projectID)
}

// Scope returns the project ids p is limited to, or nil for an admin.
func (p *Principal) Scope() []string {
	if p.Admin {
		return nil
	}
	return p.Projects
}

// NewToken returns a fresh random token and its hash.
func NewToken() (token string, hash []byte) {
	token = TokenPrefix + random()
	return token, Hash(token)
}

// Hash is how a token is stored and looked up.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Issue stores a new token with the given scope and returns it; it is not kept.
func Issue(ctx context.Context, db store.DB, name string, admin bool, projectIDs []string) (string, error) {
	token, hash := NewToken()
	id, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	err = store.CreateToken(ctx, db, store.Token{ID: id.String(), Name: name, Admin: admin, ProjectIDs: projectIDs}, hash)
	return token, err
}

// DefaultMaxEntries is Options.MaxEntries's default.
const DefaultMaxEntries = 10_000

// Options configures New.
type Options struct {
	// TTL is how long a valid token's principal is remembered, so a busy
	// bot costs one lookup per TTL, not one per request; a revoked token
	// keeps working in this process for at most TTL. 0: no cache.
	TTL time.Duration
	// MissTTL is how long an unknown (or revoked) token is remembered as
	// such, so a flood of bad tokens does not reach the database each
	// time; a token stored after a miss works at most MissTTL later. 0: no
	// negative cache.
	MissTTL time.Duration
	// MaxEntries bounds each cache; a full cache drops its expired
	// entries, and all of them if none had expired. Default
	// DefaultMaxEntries.
	MaxEntries int
	Now        func() time.Time // default time.Now
}

// Authenticator resolves bearer tokens, caching answers (Options.TTL and
// MissTTL): a token revoked elsewhere stops working here within TTL, and at
// once after Live found it revoked.
type Authenticator struct {
	db  store.DB
	o   Options
	now func() time.Time

	mu     sync.Mutex
	cache  map[string]cached    // token hash → principal
	misses map[string]time.Time // token hash → until when it is unknown
}

type cached struct {
	p       *Principal
	expires time.Time
}

// New returns an Authenticator on db.
func New(db store.DB, o Options) *Authenticator {
	o.MaxEntries = cmp.Or(o.MaxEntries, DefaultMaxEntries)
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Authenticator{db: db, o: o, now: now, cache: map[string]cached{}, misses: map[string]time.Time{}}
}

// Authenticate returns the principal of token.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return nil, ErrInvalidToken
	}
	hash := Hash(token)
	key := string(hash)
	now := a.now()
	a.mu.Lock()
	c, hit := a.cache[key]
	missUntil, missed := a.misses[key]
	a.mu.Unlock()
	if hit && now.Before(c.expires) {
		return c.p, nil
	}
	if missed && now.Before(missUntil) {
		return nil, ErrInvalidToken
	}
	t, err := store.LookupToken(ctx, a.db, hash)
	if errors.Is(err, store.ErrNotFound) {
		if a.o.MissTTL > 0 {
			a.mu.Lock()
			delete(a.cache, key)
			a.misses[key] = now.Add(a.o.MissTTL)
			bound(a.misses, a.o.MaxEntries, now, func(until time.Time) time.Time { return until })
			a.mu.Unlock()
		}
		return nil, ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	p := &Principal{TokenID: t.ID, Name: t.Name, Admin: t.Admin, Projects: t.ProjectIDs}
	a.mu.Lock()
	delete(a.misses, key)
	if a.o.TTL > 0 {
		a.cache[key] = cached{p: p, expires: now.Add(a.o.TTL)}
		bound(a.cache, a.o.MaxEntries, now, func(c cached) time.Time { return c.expires })
	}
	a.mu.Unlock()
	return p, nil
}

// bound keeps m at most max entries: past it, the expired ones go, and
// everything when none had expired.
func bound[V any](m map[string]V, max int, now time.Time, expires func(V) time.Time) {
	if len(m) <= max {
		return
	}
	for k, v := range m {
		if !now.Before(expires(v)) {
			delete(m, k)
		}
	}
	if len(m) > max {
		clear(m)
	}
}

// Live reports whether the token with id is still valid, asking the
// database, never the cache. A token found revoked (or gone) is dropped
// from the cache, so this process refuses it from now on. Open event
// streams ask it at each heartbeat.
func (a *Authenticator) Live(ctx context.Context, tokenID string) (bool, error) {
	live, err := store.TokenLive(ctx, a.db, tokenID)
	if err != nil || live {
		return live, err
	}
	a.mu.Lock()
	for k, c := range a.cache {
		if c.p.TokenID == tokenID {
			delete(a.cache, k)
		}
	}
	a.mu.Unlock()
	return false, nil
}

// Forget drops every cached answer (after a grant or a revoke in this process).
func (a *Authenticator) Forget() {
	a.mu.Lock()
	clear(a.cache)
	clear(a.misses)
	a.mu.Unlock()
}
