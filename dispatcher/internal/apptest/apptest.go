// Package apptest runs the whole dispatcher in a test: app.New and Start on
// a test's own Postgres schema, its handler behind an httptest server, both
// stopped when the test ends. Tests of the packages the dispatcher is built
// from (api, events, callback, cli, client, metrics, riverui) use it to go through
// the real router, auth and River client: Env is that dispatcher with an
// admin token and a dispatcher/client of its API, and helpers to make a
// project, submit, get, stream and wait for builds.
//
// It is for tests only, and it does not start a cluster: launching needs
// kubebox (tests/e2e).
package apptest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
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

// Env is a dispatcher started by Start, with an admin token and a client of
// its API that uses it. Its helpers fail the test on an error; call them
// from the test's goroutine.
type Env struct {
	T      testing.TB
	DB     *pgtest.DB
	App    *app.App
	Server *httptest.Server
	Admin  string         // an admin API token
	Client *client.Client // the API as Admin
}

// AdminName is the name of Env.Admin (the requests it makes log it).
const AdminName = "admin-bot"

// Timeout bounds Env's Stream and Wait.
const Timeout = 60 * time.Second

// New starts a dispatcher from o (see Start) on a Postgres schema of its own.
func New(t testing.TB, o app.Options) *Env {
	t.Helper()
	return NewOn(t, pgtest.New(t), o)
}

// NewOn starts a dispatcher from o on db: another replica of a dispatcher
// already running there, or the first. Each gets an admin token of its own.
func NewOn(t testing.TB, db *pgtest.DB, o app.Options) *Env {
	t.Helper()
	a, srv := Start(t, db, o)
	e := &Env{T: t, DB: db, App: a, Server: srv}
	e.Admin = e.issue(AdminName, true, nil)
	e.Client = e.ClientAs(e.Admin)
	return e
}

// Token issues an API token named name for projectIDs (none: a token that
// may see no project).
func (e *Env) Token(name string, projectIDs ...string) string {
	e.T.Helper()
	return e.issue(name, false, projectIDs)
}

func (e *Env) issue(name string, admin bool, projectIDs []string) string {
	e.T.Helper()
	tok, err := auth.Issue(context.Background(), e.DB.Pool, name, admin, projectIDs)
	if err != nil {
		e.T.Fatalf("issuing token %s: %v", name, err)
	}
	return tok
}

// ClientAs returns a client of the API that sends token.
func (e *Env) ClientAs(token string) *client.Client {
	return &client.Client{BaseURL: e.Server.URL, Token: token, HTTP: e.Server.Client()}
}

// Project stores a project as Project does.
func (e *Env) Project(name string, edit ...func(*schema.Project)) *schema.Project {
	e.T.Helper()
	return Project(e.T, e.DB.Pool, name, edit...)
}

// Submit submits spec to project (an id or a name) through the API, as the
// admin, and returns the build's id.
func (e *Env) Submit(project string, spec schema.BuildSpec) string {
	e.T.Helper()
	acc, err := e.Client.Submit(context.Background(), project, spec, "")
	if err != nil {
		e.T.Fatalf("submitting to %s: %v", project, err)
	}
	return acc.TaskID
}

// Pending stores a pending build of project straight in the store: its
// status event (seq 1) and audit row, but no River job, so nothing launches
// it. Tests of what happens to a build after intake start from it.
func (e *Env) Pending(projectID string, spec schema.BuildSpec) string {
	e.T.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	if _, err := store.InsertBuild(context.Background(), e.DB.Pool, store.NewBuild{ID: id, ProjectID: projectID,
		Spec: spec, RequestedBy: "apptest"}); err != nil {
		e.T.Fatalf("storing a build of %s: %v", projectID, err)
	}
	return id
}

// Get returns a build as GET /builds/{id} answers it.
func (e *Env) Get(id string) *schema.Build {
	e.T.Helper()
	b, err := e.Client.Get(context.Background(), id)
	if err != nil {
		e.T.Fatalf("getting build %s: %v", id, err)
	}
	return b
}

// Wait waits (at most Timeout) until a build's status is one of want (any
// terminal status without want) and returns the build then.
func (e *Env) Wait(id string, want ...schema.Status) *schema.Build {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	b, err := e.Client.Wait(ctx, id, want...)
	if err != nil {
		e.T.Fatalf("waiting for build %s to be %v: %v", id, want, err)
	}
	return b
}

// Stream follows a build's events after o.After (from the first by default)
// until the build is terminal, at most Timeout, and returns them in order
// with the build's final status. o.Show, if set, sees each event too.
func (e *Env) Stream(id string, o client.WatchOptions) ([]schema.Event, schema.Status) {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	var evs []schema.Event
	show := o.Show
	o.Show = func(ev schema.Event) {
		evs = append(evs, ev)
		if show != nil {
			show(ev)
		}
	}
	st, err := e.Client.Watch(ctx, id, o)
	if err != nil {
		e.T.Fatalf("following build %s after %d events: %v", id, len(evs), err)
	}
	return evs, st
}

// ReasonFor is the reason a test gives a build it moves straight to status
// to with the store (a failure or cancel must carry one).
func ReasonFor(to schema.Status) schema.Reason {
	switch to {
	case schema.StatusFailed:
		return schema.ReasonRunnerError
	case schema.StatusCancelled:
		return schema.ReasonCancelled
	}
	return schema.ReasonNone
}
