// Package apptest runs the whole dispatcher in a test: app.New and Start on
// a test's own Postgres schema, its handler behind an httptest server, both
// stopped when the test ends. Tests of the packages the dispatcher is built
// from (api, events, callback, client, metrics, riverui) use it to go through
// the real router, auth and River client.
package apptest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Start builds the dispatcher from o, starts it and serves it. o.Pool and
// o.Schema default to db's; o.Logger to one that discards.
func Start(t testing.TB, db *pgtest.DB, o app.Options) (*app.App, *httptest.Server) {
	t.Helper()
	if o.Pool == nil {
		o.Pool = db.Pool
	}
	if o.Schema == "" {
		o.Schema = db.Schema
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a, err := app.New(o)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("starting the app: %v", err)
	}
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(func() {
		// Event streams and keep-alive connections end first, so neither
		// Close nor Stop waits for them.
		srv.CloseClientConnections()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
	})
	return a, srv
}

// Project stores a project named name with workable settings (namespace
// default, workdir /w, branch main, one build at a time), after edit, and
// returns it.
func Project(t testing.TB, db store.DB, name string, edit ...func(*schema.Project)) *schema.Project {
	t.Helper()
	p := &schema.Project{ID: uuid.NewString(), Name: name, Namespace: "default", Workdir: "/w", GitRemote: "origin",
		GitBranch: "main", AuthorName: "Kiln", AuthorEmail: "k@localhost", MaxConcurrent: 1}
	for _, f := range edit {
		f(p)
	}
	if err := store.CreateProject(context.Background(), db, p); err != nil {
		t.Fatalf("creating project %s: %v", name, err)
	}
	return p
}

// VerifyNoLeaks runs a package's tests (call it from TestMain) and fails
// them if goroutines outlive them: an event stream, a River client or a
// delivery that was never stopped. Idle keep-alive connections of the HTTP
// clients the tests use close shortly after their server and are not leaks.
func VerifyNoLeaks(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"))
}
