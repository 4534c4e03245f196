package cli_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/cli"
)

// dispatcher runs `dispatcher args... <database flags>`.
func dispatcher(e *apptest.Env, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	args = append(args, "--database-url", e.DB.URL, "--db-schema", e.DB.Schema)
	code := cli.Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

type listed struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Admin    bool   `json:"admin"`
	Projects []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"projects"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

func listJSON(t *testing.T, e *apptest.Env) map[string]listed {
	t.Helper()
	code, out, errs := dispatcher(e, "token", "list", "--json")
	require.Equal(t, 0, code, errs)
	var all []listed
	require.NoError(t, json.Unmarshal([]byte(out), &all), out)
	byName := map[string]listed{}
	for _, l := range all {
		byName[l.Name] = l
	}
	return byName
}

// token list shows every token's id, name, scope, creation, last use and
// revocation, never the token or its hash; token revoke (by name or id)
// makes the API refuse it within the auth cache TTL.
func TestTokenListAndRevoke(t *testing.T) {
	t.Parallel()
	e := apptest.New(t, app.Options{AuthCacheTTL: 200 * time.Millisecond})
	web := e.Project("web")
	e.Project("api")

	code, out, errs := dispatcher(e, "token", "create", "--name", "web-bot", "--project", "web", "--project", "api")
	require.Equal(t, 0, code, errs)
	webTok := strings.TrimSpace(out)
	code, out, errs = dispatcher(e, "token", "create", "--name", "ops", "--admin")
	require.Equal(t, 0, code, errs)
	opsTok := strings.TrimSpace(out)

	bot := e.ClientAs(webTok)
	_, err := bot.Get(context.Background(), "0190f1c5-0000-7000-8000-000000000001")
	var ae *client.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusNotFound, ae.Status, "the token works (and was used)")

	code, table, errs := dispatcher(e, "token", "list")
	require.Equal(t, 0, code, errs)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 4, table) // header, the env's admin, web-bot, ops
	assert.Regexp(t, `^ID +NAME +SCOPE +CREATED +LAST USED +REVOKED$`, lines[0])
	assert.Regexp(t, `^[0-9a-f-]{36} +web-bot +api,web +\d{4}-\d\d-\d\dT\S+Z +\d{4}-\S+Z +-$`, lines[2], "used, not revoked")
	assert.Regexp(t, `^[0-9a-f-]{36} +ops +admin +\S+ +- +-$`, lines[3], "never used")
	for _, tok := range []string{webTok, opsTok} {
		assert.NotContains(t, table, tok)
		assert.NotContains(t, table, hex.EncodeToString(auth.Hash(tok)))
	}

	tokens := listJSON(t, e)
	require.Contains(t, tokens, "web-bot")
	wb := tokens["web-bot"]
	assert.False(t, wb.Admin)
	require.Len(t, wb.Projects, 2)
	assert.Equal(t, "api", wb.Projects[0].Name)
	assert.Equal(t, web.ID, wb.Projects[1].ID)
	assert.NotNil(t, wb.LastUsedAt)
	assert.Nil(t, wb.RevokedAt)
	assert.True(t, tokens["ops"].Admin)
	assert.Empty(t, tokens["ops"].Projects)

	code, out, errs = dispatcher(e, "token", "revoke", "web-bot")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "revoked token web-bot ("+wb.ID+")")
	assert.Contains(t, out, "within their auth cache TTL")
	require.Eventually(t, func() bool {
		_, err := bot.Get(context.Background(), "0190f1c5-0000-7000-8000-000000000001")
		return errors.As(err, &ae) && ae.Status == http.StatusUnauthorized
	}, 30*time.Second, 50*time.Millisecond, "a revoked token is refused once the auth cache forgot it")
	assert.NotNil(t, listJSON(t, e)["web-bot"].RevokedAt)

	code, out, errs = dispatcher(e, "token", "revoke", wb.ID)
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "was already revoked at", "revoking twice is fine")

	ops := tokens["ops"]
	code, out, errs = dispatcher(e, "token", "revoke", ops.ID) // by id; flags after the argument too
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "revoked token ops")
	who, err := auth.New(e.DB.Pool, auth.Options{}).Authenticate(context.Background(), opsTok)
	assert.ErrorIs(t, err, auth.ErrInvalidToken, "who=%v", who)
	_, err = auth.New(e.DB.Pool, auth.Options{}).Authenticate(context.Background(), e.Admin)
	assert.NoError(t, err, "other tokens still work")
}

func TestTokenRevokeRefuses(t *testing.T) {
	t.Parallel()
	e := apptest.New(t, app.Options{})
	for range 2 {
		code, _, errs := dispatcher(e, "token", "create", "--name", "twin", "--admin")
		require.Equal(t, 0, code, errs)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "revoke", "twin"}, `2 live tokens are named "twin"`},
		{[]string{"token", "revoke", "nobody"}, `no token has the id or name "nobody"`},
		{[]string{"token", "revoke", "0190f1c5-0000-7000-8000-000000000009"}, `no token has the id or name`},
		{[]string{"token", "revoke"}, "give one token id or name"},
		{[]string{"token", "revoke", "a", "b"}, "give one token id or name"},
		{[]string{"token", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"token", "frobnicate"}, `unknown token command "frobnicate"`},
	} {
		code, _, errs := dispatcher(e, c.args...)
		assert.Equal(t, 1, code, c.args)
		assert.Contains(t, errs, c.want, c.args)
	}
	tokens := listJSON(t, e)
	assert.Nil(t, tokens["twin"].RevokedAt, "nothing was revoked")
}
