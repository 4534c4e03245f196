package riverui_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/schema"
)

// River's UI answers admin tokens only, through the dispatcher's real router.
func TestRiverUIBehindAdminAuth(t *testing.T) {
	t.Parallel()
	e := apptest.New(t, app.Options{Workers: 1})
	srv, admin := e.Server, e.Admin
	p := e.Project("web")
	bot := e.Token("bot", p.ID)
	e.Submit(p.ID, schema.BuildSpec{Prompt: "x"})

	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	code, _ := get("/riverui/", "")
	assert.Equal(t, 401, code)
	code, _ = get("/riverui/", "kiln_bogus")
	assert.Equal(t, 401, code)
	code, _ = get("/riverui/", bot)
	assert.Equal(t, 403, code, "a project token may not see every project's jobs")
	code, body := get("/riverui/", admin)
	assert.Equal(t, 200, code)
	assert.Contains(t, strings.ToLower(body), "<html")
	// The job is available, running, or scheduled once the worker (no
	// cluster here) snoozed it; it may move between two of the queries, so
	// the states are looked at again until one shows it.
	assert.Eventually(t, func() bool {
		for _, state := range []string{"available", "running", "scheduled"} {
			code, body := get("/riverui/api/jobs?state="+state+"&limit=10", admin)
			if code == 200 && strings.Contains(body, "kiln_dispatch") {
				return true
			}
		}
		return false
	}, 10*time.Second, 100*time.Millisecond, "the UI's API lists Kiln's River jobs")
	code, _ = get("/riverui/api/jobs?state=available&limit=10", bot)
	assert.Equal(t, 403, code)
}
