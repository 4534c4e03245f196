package client_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

type env struct {
	t     *testing.T
	db    *pgtest.DB
	app   *app.App
	srv   *httptest.Server
	token string
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	db := pgtest.New(t)
	a, srv := apptest.Start(t, db, app.Options{EventHeartbeat: 100 * time.Millisecond})
	p := apptest.Project(t, db.Pool, "web", func(p *schema.Project) { p.CallbackSecret = "kcs_x" })
	tok, err := auth.Issue(context.Background(), db.Pool, "bot", false, []string{p.ID})
	require.NoError(t, err)
	return &env{t: t, db: db, app: a, srv: srv, token: tok}
}

// run runs `dispatcher client args...` with KILN_URL and KILN_TOKEN set.
func (e *env) run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	env := map[string]string{"KILN_URL": e.srv.URL, "KILN_TOKEN": e.token}
	code = client.Main(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	assert.NotContains(e.t, out.String()+errb.String(), e.token, "the token is never printed")
	return code, out.String(), errb.String()
}

func TestSubmitGetListCancelWatch(t *testing.T) {
	e := setup(t)
	code, out, errs := e.run("submit", "--project", "web", "--var", "who=Acme", "--auto-commit",
		"--idempotency-key", "k1", "make", "it", "say", "{{who}}")
	require.Equal(t, 0, code, errs)
	id := strings.TrimSpace(out)
	require.Regexp(t, `^[0-9a-f-]{36}$`, id)

	code, again, _ := e.run("submit", "--project", "web", "--var", "who=Acme", "--auto-commit",
		"--idempotency-key", "k1", "make it say {{who}}")
	require.Equal(t, 0, code)
	assert.Equal(t, id, strings.TrimSpace(again), "same Idempotency-Key, same build")

	code, out, _ = e.run("get", id)
	require.Equal(t, 0, code)
	assert.Contains(t, out, `"status": "pending"`)
	assert.Contains(t, out, `"who": "Acme"`)
	assert.Contains(t, out, `"auto_commit": true`)

	code, out, _ = e.run("list", "--project", "web", "--status", "pending", "--limit", "5")
	require.Equal(t, 0, code)
	assert.Regexp(t, regexp.MustCompile(id+`\s+pending\s+.*make it say`), out)

	code, out, _ = e.run("cancel", id, "--reason", "changed my mind")
	require.Equal(t, 0, code)
	assert.Equal(t, id+" cancelled\n", out)

	code, out, _ = e.run("watch", id)
	assert.Equal(t, client.ExitCancelled, code)
	assert.Regexp(t, `#1 +status +pending`, out)
	assert.Regexp(t, `#2 +status +cancelled: changed my mind`, out)
	assert.Contains(t, out, "build "+id+" cancelled: changed my mind")

	code, _, errs = e.run("get", uuid.NewString())
	assert.Equal(t, client.ExitError, code)
	assert.Contains(t, errs, "HTTP 404")
	code, _, _ = e.run("submit", "--project", "web")
	assert.Equal(t, client.ExitUsage, code)
	code, _, _ = e.run("frobnicate")
	assert.Equal(t, client.ExitUsage, code)
	code, _, _ = e.run("watch")
	assert.Equal(t, client.ExitUsage, code)
}

func TestWatchExitStatusAndResume(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct {
		ws   bool
		to   schema.Status
		code int
	}{{false, schema.StatusCompleted, 0}, {true, schema.StatusFailed, 1}, {false, schema.StatusFailed, 1}, {true, schema.StatusCompleted, 0}} {
		t.Run(fmt.Sprintf("ws=%v/%s", tc.ws, tc.to), func(t *testing.T) {
			id := uuid.Must(uuid.NewV7()).String()
			ctx := context.Background()
			_, err := store.InsertBuild(ctx, e.db.Pool, store.NewBuild{ID: id, ProjectID: projectOf(t, e),
				Spec: schema.BuildSpec{Prompt: "p"}, RequestedBy: "t"})
			require.NoError(t, err)

			var mu sync.Mutex
			var seqs []int64
			c := &client.Client{BaseURL: e.srv.URL, Token: e.token}
			done := make(chan schema.Status, 1)
			go func() {
				st, err := c.Watch(ctx, id, client.WatchOptions{WebSocket: tc.ws, Sleep: func(time.Duration) {},
					Show: func(ev schema.Event) { mu.Lock(); seqs = append(seqs, ev.Seq); mu.Unlock() }})
				assert.NoError(t, err)
				done <- st
			}()
			seen := func(n int) func() bool {
				return func() bool { mu.Lock(); defer mu.Unlock(); return len(seqs) >= n }
			}
			require.Eventually(t, seen(1), 10*time.Second, 5*time.Millisecond)
			for i := range 30 {
				_, err := store.AppendEvent(ctx, e.db.Pool, id, schema.EventAgentText, map[string]string{"text": fmt.Sprint(i)})
				require.NoError(t, err)
				if i%10 == 5 {
					require.Eventually(t, seen(i+2), 10*time.Second, 5*time.Millisecond)
					e.srv.CloseClientConnections() // the watcher reconnects and resumes
				}
			}
			reason := schema.ReasonNone
			if tc.to == schema.StatusFailed {
				reason = schema.ReasonAgentError
			}
			_, err = store.TransitionBuild(ctx, e.db.Pool, id, store.Transition{To: tc.to, Reason: reason})
			require.NoError(t, err)
			select {
			case st := <-done:
				assert.Equal(t, tc.to, st)
			case <-time.After(20 * time.Second):
				t.Fatal("watch did not end")
			}
			want := make([]int64, 32)
			for i := range want {
				want[i] = int64(i + 1)
			}
			assert.Equal(t, want, seqs, "every event once, in order, across reconnects")

			var out, errb bytes.Buffer
			args := []string{"watch", id, "--quiet"}
			if tc.ws {
				args = append(args, "--ws")
			}
			code := client.Main(ctx, args, &out, &errb, envMap{"KILN_URL": e.srv.URL, "KILN_TOKEN": e.token}.get)
			assert.Equal(t, tc.code, code, errb.String())
		})
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	env := map[string]string{"KILN_URL": "http://127.0.0.1:1", "KILN_TOKEN": "kiln_secret_value"}
	code := client.Main(context.Background(), []string{"get", uuid.NewString()}, &out, &errb, func(k string) string { return env[k] })
	assert.Equal(t, client.ExitError, code)
	assert.NotContains(t, out.String()+errb.String(), "kiln_secret_value")
	code = client.Main(context.Background(), []string{"get", "x"}, &out, &errb, func(string) string { return "" })
	assert.Equal(t, client.ExitUsage, code, "no token")
}

func projectOf(t *testing.T, e *env) string {
	var id string
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT id FROM projects WHERE name = 'web'`).Scan(&id))
	return id
}

type envMap map[string]string

func (m envMap) get(k string) string { return m[k] }

// Submit survives a lost answer and an outage between it and the API: the
// first attempt reaches the dispatcher but its answer is cut off, the second
// meets a 503, the third gets through. Every attempt carries the same
// Idempotency-Key, so the answer names the build the first attempt made,
// and only that build exists. A 422 is not retried.
func TestSubmitRetriesWithOneKey(t *testing.T) {
	e := setup(t)
	var mu sync.Mutex
	var keys []string
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		switch n {
		case 1: // delivered, but the answer is lost
			e.srv.Config.Handler.ServeHTTP(httptest.NewRecorder(), r)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			e.srv.Config.Handler.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(front.Close)
	c := &client.Client{BaseURL: front.URL, Token: e.token}
	acc, err := c.Submit(context.Background(), "web", schema.BuildSpec{Prompt: "once"}, "")
	require.NoError(t, err)
	require.Len(t, keys, 3)
	assert.NotEmpty(t, keys[0], "a key is made when none is given")
	assert.Equal(t, []string{keys[0], keys[0], keys[0]}, keys, "one key for every attempt")
	var builds int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM builds`).Scan(&builds))
	assert.Equal(t, 1, builds, "one build for three attempts")
	var first string
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT id FROM builds`).Scan(&first))
	assert.Equal(t, first, acc.TaskID)

	// A refusal is final: one attempt.
	var tries int
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tries++
		mu.Unlock()
		e.srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(counting.Close)
	c = &client.Client{BaseURL: counting.URL, Token: e.token}
	_, err = c.Submit(context.Background(), "web", schema.BuildSpec{Prompt: ""}, "")
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusUnprocessableEntity, apiErr.Status)
	assert.Equal(t, 1, tries)
}
