package auth

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// SessionPrefix starts every console session id, so a session cookie is
// never mistaken for an API token (or the other way around).
const SessionPrefix = "kilns_"

// DefaultSessionTTL is how long a console sign-in lasts by default.
const DefaultSessionTTL = 12 * time.Hour

// Sessions are console sign-ins. A session is made from a token (Create)
// and acts as it: it sees what the token sees, and it ends when the token
// is revoked or deleted, when it expires, or when it is deleted (signing
// out). Nothing is cached: each lookup asks the database, so revoking a
// token ends its sessions at once.
type Sessions struct {
	db  store.DB
	ttl time.Duration
	now func() time.Time
}

// NewSessions returns the sessions on db; each lasts ttl (0: DefaultSessionTTL).
func NewSessions(db store.DB, ttl time.Duration) *Sessions {
	return &Sessions{db: db, ttl: cmp.Or(ttl, DefaultSessionTTL), now: time.Now}
}

// Session is a live session: who it acts as and the CSRF token its
// state-changing requests must carry.
type Session struct {
	Principal *Principal
	CSRF      string
	Expires   time.Time
}

// Create starts a session acting as p and returns its id (the cookie's
// value, not kept: only its hash is stored) and the session.
func (s *Sessions) Create(ctx context.Context, p *Principal) (string, *Session, error) {
	id := SessionPrefix + random()
	sess := &Session{Principal: p, CSRF: random(), Expires: s.now().Add(s.ttl).Truncate(time.Second)}
	if err := store.CreateSession(ctx, s.db, Hash(id), p.TokenID, sess.CSRF, sess.Expires); err != nil {
		return "", nil, err
	}
	return id, sess, nil
}

// Lookup returns the live session with id, or ErrInvalidToken for an id
// that is unknown, expired, signed out or of a revoked token.
func (s *Sessions) Lookup(ctx context.Context, id string) (*Session, error) {
	if !strings.HasPrefix(id, SessionPrefix) {
		return nil, ErrInvalidToken
	}
	row, err := store.LookupSession(ctx, s.db, Hash(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	return &Session{Principal: &Principal{TokenID: row.ID, Name: row.Name, Admin: row.Admin, Projects: row.ProjectIDs},
		CSRF: row.CSRF, Expires: row.ExpiresAt}, nil
}

// Delete ends the session with id.
func (s *Sessions) Delete(ctx context.Context, id string) error {
	return store.DeleteSession(ctx, s.db, Hash(id))
}

// TTL is how long a session lasts.
func (s *Sessions) TTL() time.Duration { return s.ttl }

// random is 32 random bytes, base64url: the secret part of tokens, session
// ids and CSRF tokens.
func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
