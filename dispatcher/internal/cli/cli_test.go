package cli

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestMigrateAndTokenCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	dbFlags := []string{"--database-url", db.URL, "--db-schema", db.Schema}

	code, _, stderr := run(append([]string{"migrate"}, dbFlags...)...)
	require.Equal(t, 0, code, "migrate on a migrated schema is a no-op: %s", stderr)

	p, err := intake.NormalizeProject(schema.ProjectInput{Name: "web"}, "")
	require.NoError(t, err)
	p.ID, p.CallbackSecret = "0190f1c5-0000-7000-8000-0000000000aa", "s"
	require.NoError(t, store.CreateProject(ctx, db.Pool, p))

	code, stdout, stderr := run(append([]string{"token", "create", "--name", "web-bot", "--project", "web"}, dbFlags...)...)
	require.Equal(t, 0, code, stderr)
	tok := strings.TrimSpace(stdout)
	require.True(t, strings.HasPrefix(tok, auth.TokenPrefix), tok)
	who, err := auth.New(db.Pool, auth.Options{}).Authenticate(ctx, tok)
	require.NoError(t, err)
	assert.Equal(t, "web-bot", who.Name)
	assert.False(t, who.Admin)
	assert.Equal(t, []string{p.ID}, who.Projects)

	code, stdout, stderr = run(append([]string{"token", "create", "--name", "ops", "--admin"}, dbFlags...)...)
	require.Equal(t, 0, code, stderr)
	who, err = auth.New(db.Pool, auth.Options{}).Authenticate(ctx, strings.TrimSpace(stdout))
	require.NoError(t, err)
	assert.True(t, who.Admin)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "--admin"}, "--name: required"},
		{[]string{"token", "create", "--name", "x"}, "--project: give at least one project, or --admin"},
		{[]string{"token", "create", "--name", "x", "--admin", "--project", "web"}, "give one or the other"},
		{[]string{"token", "create", "--name", "x", "--project", "nope"}, "--project nope: project nope: not found"},
	} {
		code, _, stderr := run(append(c.args, dbFlags...)...)
		assert.Equal(t, 1, code, c.args)
		assert.Contains(t, stderr, c.want, c.args)
	}
	code, _, stderr = run("frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `unknown command "frobnicate"`)
	code, _, stderr = run("serve", "--workers", "-1")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "workers: must be a non-negative integer")
}

// TestDebugListener: --debug-addr serves Go's profiles on a listener of its
// own; the API's listener does not.
func TestDebugListener(t *testing.T) {
	addr, stop, err := serveDebug("127.0.0.1:0", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer stop()
	res, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, string(body), "goroutine profile:")

	_, _, err = serveDebug(addr, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "debug-addr: listening on "+addr, "a taken address is named")
}
