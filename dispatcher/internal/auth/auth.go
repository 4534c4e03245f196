package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
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

// Authenticator resolves bearer tokens, caching answers for a short TTL so a
// busy bot costs one lookup per TTL, not one per request. A revoked token stops
// working within the TTL.
type Authenticator struct {
	db  store.DB
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	p       *Principal
	expires time.Time
}

// NewAuthenticator returns an Authenticator on db; ttl 0 disables the cache.
func NewAuthenticator(db store.DB, ttl time.Duration) *Authenticator {
	return &Authenticator{db: db, ttl: ttl, now: time.Now, cache: map[string]cached{}}
}

// Authenticate returns the principal of token.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return nil, ErrInvalidToken
	}
	hash := Hash(token)
	key := string(hash)
	if a.ttl > 0 {
		a.mu.Lock()
		c, ok := a.cache[key]
		a.mu.Unlock()
		if ok && a.now().Before(c.expires) {
			return c.p, nil
		}
	}
	t, err := store.LookupToken(ctx, a.db, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	p := &Principal{TokenID: t.ID, Name: t.Name, Admin: t.Admin, Projects: t.ProjectIDs}
	if a.ttl > 0 {
		a.mu.Lock()
		if len(a.cache) > 10000 {
			clear(a.cache)
		}
		a.cache[key] = cached{p: p, expires: a.now().Add(a.ttl)}
		a.mu.Unlock()
	}
	return p, nil
}

// Forget drops every cached answer (after a grant or a revoke in this process).
func (a *Authenticator) Forget() {
	a.mu.Lock()
	clear(a.cache)
	a.mu.Unlock()
}
