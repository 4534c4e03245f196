package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/cli"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

type env struct {
	*apptest.Env
	t       *testing.T
	project string // web's id
	token   string // a token for web
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	a := apptest.New(t, app.Options{EventHeartbeat: 100 * time.Millisecond})
	p := a.Project("web", func(p *schema.Project) { p.CallbackSecret = "kcs_x" })
	return &env{Env: a, t: t, project: p.ID, token: a.Token("bot", p.ID)}
}

// run runs `dispatcher client args...` with KILN_URL and KILN_TOKEN set.
func (e *env) run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	env := map[string]string{"KILN_URL": e.Server.URL, "KILN_TOKEN": e.token}
	code = cli.ClientMain(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
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
	assert.Regexp(t, regexp.MustCompile(id+`\s+pending\s+\S+ \S+\s+default\s+\S+`), out)
	assert.NotContains(t, out, "make it say", "a list shows summaries, not prompts")

	code, out, _ = e.run("cancel", id, "--reason", "changed my mind")
	require.Equal(t, 0, code)
	assert.Equal(t, id+" cancelled\n", out)

	code, out, _ = e.run("watch", id)
	assert.Equal(t, cli.ExitCancelled, code)
	assert.Regexp(t, `#1 +status +pending`, out)
	assert.Regexp(t, `#2 +status +cancelled: changed my mind`, out)
	assert.Contains(t, out, "build "+id+" cancelled: changed my mind")

	code, _, errs = e.run("get", uuid.NewString())
	assert.Equal(t, cli.ExitError, code)
	assert.Contains(t, errs, "HTTP 404")
	code, _, _ = e.run("submit", "--project", "web")
	assert.Equal(t, cli.ExitUsage, code)
	code, _, _ = e.run("frobnicate")
	assert.Equal(t, cli.ExitUsage, code)
	code, _, _ = e.run("watch")
	assert.Equal(t, cli.ExitUsage, code)
}

// watch's exit status is the build's outcome, over SSE and the WebSocket.
func TestWatchExitStatus(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct {
		ws   bool
		to   schema.Status
		code int
	}{{false, schema.StatusCompleted, cli.ExitOK}, {true, schema.StatusFailed, cli.ExitFailed}, {false, schema.StatusFailed, cli.ExitFailed},
		{true, schema.StatusCompleted, cli.ExitOK}, {true, schema.StatusCancelled, cli.ExitCancelled}} {
		t.Run(fmt.Sprintf("ws=%v/%s", tc.ws, tc.to), func(t *testing.T) {
			id := e.Pending(e.project, schema.BuildSpec{Prompt: "p"})
			_, err := store.TransitionBuild(context.Background(), e.DB.Pool, id, store.Transition{To: tc.to, Reason: apptest.ReasonFor(tc.to)})
			require.NoError(t, err)
			args := []string{"watch", id, "--quiet"}
			if tc.ws {
				args = append(args, "--ws")
			}
			code, out, errs := e.run(args...)
			assert.Equal(t, tc.code, code, errs)
			assert.Equal(t, "build "+id+" "+string(tc.to)+"\n", out)
		})
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	env := map[string]string{"KILN_URL": "http://127.0.0.1:1", "KILN_TOKEN": "kiln_secret_value"}
	code := cli.ClientMain(context.Background(), []string{"get", uuid.NewString()}, &out, &errb, func(k string) string { return env[k] })
	assert.Equal(t, cli.ExitError, code)
	assert.NotContains(t, out.String()+errb.String(), "kiln_secret_value")
	code = cli.ClientMain(context.Background(), []string{"get", "x"}, &out, &errb, func(string) string { return "" })
	assert.Equal(t, cli.ExitUsage, code, "no token")
}

type envMap map[string]string

func (m envMap) get(k string) string { return m[k] }
