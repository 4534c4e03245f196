// Package lifecycletest gives tests a real lifecycle on their own Postgres
// schema, with the insert-only River client the app gives it. It is for
// tests only.
package lifecycletest

import (
	"testing"

	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
)

// New returns a lifecycle on db built from o; o.Pool and o.River default to
// db's pool and an insert-only River client on db's schema.
func New(t testing.TB, db *pgtest.DB, o lifecycle.Options) *lifecycle.Lifecycle {
	t.Helper()
	if o.Pool == nil {
		o.Pool = db.Pool
	}
	if o.River == nil {
		rc, err := queue.NewClient(db.Pool, queue.Options{Schema: db.Schema})
		if err != nil {
			t.Fatalf("river client: %v", err)
		}
		o.River = rc
	}
	lc, err := lifecycle.New(o)
	if err != nil {
		t.Fatalf("lifecycle.New: %v", err)
	}
	return lc
}
