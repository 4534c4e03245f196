package auth_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// countingDB counts the queries that reach the database.
type countingDB struct {
	store.DB
	n atomic.Int64
}

func (c *countingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.n.Add(1)
	return c.DB.QueryRow(ctx, sql, args...)
}

type clock struct{ t atomic.Pointer[time.Time] }

func (c *clock) now() time.Time { return *c.t.Load() }
func (c *clock) advance(d time.Duration) {
	t := c.now().Add(d)
	c.t.Store(&t)
}

func newClock() *clock {
	c := &clock{}
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.t.Store(&t)
	return c
}

func setup(t *testing.T, o auth.Options) (*auth.Authenticator, *countingDB, *clock, *pgtest.DB) {
	t.Helper()
	t.Parallel()
	db := pgtest.New(t)
	cdb := &countingDB{DB: db.Pool}
	clk := newClock()
	o.Now = clk.now
	return auth.New(cdb, o), cdb, clk, db
}

// A flood of one bad token reaches the database once per MissTTL; a token
// stored after the miss works once the miss expired.
func TestNegativeCache(t *testing.T) {
	a, db, clk, pg := setup(t, auth.Options{TTL: 10 * time.Second, MissTTL: 5 * time.Second})
	ctx := context.Background()
	tok, hash := auth.NewToken()
	for range 50 {
		_, err := a.Authenticate(ctx, tok)
		require.ErrorIs(t, err, auth.ErrInvalidToken)
	}
	assert.EqualValues(t, 1, db.n.Load(), "one lookup for 50 tries of an unknown token")

	// The token comes into being (as if issued elsewhere) right after the miss.
	require.NoError(t, store.CreateToken(ctx, pg.Pool, store.Token{ID: uuid.NewString(), Name: "late", Admin: true}, hash))
	clk.advance(4 * time.Second)
	_, err := a.Authenticate(ctx, tok)
	require.ErrorIs(t, err, auth.ErrInvalidToken, "within MissTTL the miss is remembered")
	assert.EqualValues(t, 1, db.n.Load())

	clk.advance(time.Second)
	p, err := a.Authenticate(ctx, tok)
	require.NoError(t, err, "after MissTTL the token works")
	assert.Equal(t, "late", p.Name)
	assert.EqualValues(t, 2, db.n.Load())
	_, err = a.Authenticate(ctx, tok)
	require.NoError(t, err)
	assert.EqualValues(t, 2, db.n.Load(), "and is cached as valid")
}

// Without MissTTL every try of an unknown token is a lookup; one without
// the prefix never is.
func TestNoNegativeCacheAndMalformedTokens(t *testing.T) {
	a, db, _, _ := setup(t, auth.Options{TTL: 10 * time.Second})
	ctx := context.Background()
	tok, _ := auth.NewToken()
	for range 3 {
		_, err := a.Authenticate(ctx, tok)
		require.ErrorIs(t, err, auth.ErrInvalidToken)
	}
	assert.EqualValues(t, 3, db.n.Load())
	for _, bad := range []string{"", "Bearer x", "KILN_" + tok[5:], "ghp_" + tok[5:]} {
		_, err := a.Authenticate(ctx, bad)
		require.ErrorIs(t, err, auth.ErrInvalidToken, bad)
	}
	assert.EqualValues(t, 3, db.n.Load(), "tokens without the prefix are refused without a lookup")
}

// The negative cache holds at most MaxEntries; past it the expired go
// first, then everything.
func TestNegativeCacheIsBounded(t *testing.T) {
	a, db, clk, _ := setup(t, auth.Options{MissTTL: 5 * time.Second, MaxEntries: 4})
	ctx := context.Background()
	var toks []string
	for range 4 {
		tok, _ := auth.NewToken()
		toks = append(toks, tok)
		_, err := a.Authenticate(ctx, tok)
		require.ErrorIs(t, err, auth.ErrInvalidToken)
	}
	require.EqualValues(t, 4, db.n.Load())
	for _, tok := range toks {
		_, _ = a.Authenticate(ctx, tok)
	}
	require.EqualValues(t, 4, db.n.Load(), "all four remembered")

	clk.advance(6 * time.Second)
	fresh, _ := auth.NewToken()
	_, _ = a.Authenticate(ctx, fresh) // a fifth: the four expired ones go
	_, _ = a.Authenticate(ctx, fresh)
	assert.EqualValues(t, 5, db.n.Load(), "the fifth is remembered")

	for range 10 { // more than fit, none expired: the cache starts over, never grows
		tok, _ := auth.NewToken()
		_, _ = a.Authenticate(ctx, tok)
	}
	before := db.n.Load()
	_, _ = a.Authenticate(ctx, fresh)
	assert.Equal(t, before+1, db.n.Load(), "an entry lost to the bound is looked up again")
}

// A revoked token keeps working from the cache for at most TTL; Live asks
// the database, says no at once, and takes the token out of the cache.
func TestRevokedTokenAndLive(t *testing.T) {
	a, _, clk, pg := setup(t, auth.Options{TTL: 10 * time.Second, MissTTL: 5 * time.Second})
	ctx := context.Background()
	tok, err := auth.Issue(ctx, pg.Pool, "bot", true, nil)
	require.NoError(t, err)
	p, err := a.Authenticate(ctx, tok)
	require.NoError(t, err)
	live, err := a.Live(ctx, p.TokenID)
	require.NoError(t, err)
	require.True(t, live)

	_, already, err := store.RevokeToken(ctx, pg.Pool, p.TokenID)
	require.NoError(t, err)
	require.False(t, already)
	_, err = a.Authenticate(ctx, tok)
	require.NoError(t, err, "still cached")
	clk.advance(11 * time.Second)
	_, err = a.Authenticate(ctx, tok)
	require.ErrorIs(t, err, auth.ErrInvalidToken, "refused once the cache entry expired")

	// Another token, revoked while cached: Live ends it here at once.
	tok2, err := auth.Issue(ctx, pg.Pool, "bot2", true, nil)
	require.NoError(t, err)
	p2, err := a.Authenticate(ctx, tok2)
	require.NoError(t, err)
	_, _, err = store.RevokeToken(ctx, pg.Pool, p2.TokenID)
	require.NoError(t, err)
	live, err = a.Live(ctx, p2.TokenID)
	require.NoError(t, err)
	assert.False(t, live)
	_, err = a.Authenticate(ctx, tok2)
	require.ErrorIs(t, err, auth.ErrInvalidToken, "Live dropped it from the cache")

	live, err = a.Live(ctx, uuid.NewString())
	require.NoError(t, err)
	assert.False(t, live, "a token that does not exist is not live")
}

// A lookup records when the token was used, at most once a minute.
func TestLastUsed(t *testing.T) {
	a, _, _, pg := setup(t, auth.Options{})
	ctx := context.Background()
	tok, err := auth.Issue(ctx, pg.Pool, "bot", true, nil)
	require.NoError(t, err)
	list, err := store.ListTokens(ctx, pg.Pool)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Nil(t, list[0].LastUsedAt, "never used")

	_, err = a.Authenticate(ctx, tok)
	require.NoError(t, err)
	list, err = store.ListTokens(ctx, pg.Pool)
	require.NoError(t, err)
	require.NotNil(t, list[0].LastUsedAt)
	first := *list[0].LastUsedAt

	_, err = pg.Pool.Exec(ctx, `UPDATE api_tokens SET last_used_at = last_used_at - interval '30 seconds'`)
	require.NoError(t, err)
	_, err = a.Authenticate(ctx, tok)
	require.NoError(t, err)
	list, _ = store.ListTokens(ctx, pg.Pool)
	assert.Equal(t, first.Add(-30*time.Second).UTC(), list[0].LastUsedAt.UTC(), "not rewritten within a minute")

	_, err = pg.Pool.Exec(ctx, `UPDATE api_tokens SET last_used_at = last_used_at - interval '1 hour'`)
	require.NoError(t, err)
	_, err = a.Authenticate(ctx, tok)
	require.NoError(t, err)
	list, _ = store.ListTokens(ctx, pg.Pool)
	assert.True(t, list[0].LastUsedAt.After(first.Add(-time.Minute)), "rewritten after a minute: %v", list[0].LastUsedAt)
}

func ExampleNewToken() {
	tok, hash := auth.NewToken()
	fmt.Println(tok[:len(auth.TokenPrefix)], len(tok), len(hash))
	// Output: kiln_ 48 32
}
