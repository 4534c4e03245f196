package api_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/schema"
)

const publicURL = "https://kiln.example.com"

// consoleURL is the body's console_url, and whether it has one.
func consoleURL(t *testing.T, r *resp) (string, bool) {
	t.Helper()
	var body map[string]json.RawMessage
	r.decode(t, &body)
	raw, ok := body["console_url"]
	if !ok {
		return "", false
	}
	var u string
	require.NoError(t, json.Unmarshal(raw, &u))
	return u, true
}

// With a public URL, every 202 of a build submission, a build's GET and its
// cancel link to the build's console page (and match openapi.yaml, as every
// answer e.do gets).
func TestConsoleURLWithPublicURL(t *testing.T) {
	e := setup(t, func(o *app.Options) { o.PublicURL = publicURL })
	p := e.project("web")
	bot := e.token("web-bot", p.ID)
	page := func(id string) string { return publicURL + "/ui/builds/" + id }

	r := e.submit(p.ID, bot, map[string]any{"prompt": "add a pricing page"})
	id := e.accepted(r)
	u, ok := consoleURL(t, r)
	require.True(t, ok, "POST /projects/{id}/builds: %s", r.Body)
	assert.Equal(t, page(id), u)

	once := e.accepted(e.submit(p.ID, bot, map[string]any{"prompt": "same"}, header("Idempotency-Key", "k1")))
	r = e.submit(p.ID, bot, map[string]any{"prompt": "same"}, header("Idempotency-Key", "k1"))
	require.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))
	u, _ = consoleURL(t, r)
	assert.Equal(t, page(once), u, "an Idempotency-Key replay links to the first build")

	r = e.do("POST", "/project/web/build", bot, map[string]any{"prompt": "by name"})
	byName := e.accepted(r)
	u, _ = consoleURL(t, r)
	assert.Equal(t, page(byName), u, "POST /project/{name}/build")

	r = e.do("POST", "/project/create-and-build", e.admin, map[string]any{
		"project": map[string]any{"name": "fresh"}, "build": map[string]any{"prompt": "first"}})
	first := e.accepted(r)
	u, _ = consoleURL(t, r)
	assert.Equal(t, page(first), u, "POST /project/create-and-build")

	r = e.do("GET", "/builds/"+id, bot, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	u, _ = consoleURL(t, r)
	assert.Equal(t, page(id), u, "GET /builds/{taskId}")
	assert.Equal(t, page(id), e.build(bot, id).ConsoleURL)

	e.finish(id, schema.BuildResult{Success: true, SessionID: "s-1", Output: "added"})
	r = e.do("POST", "/builds/"+id+"/followups", bot, map[string]any{"prompt": "link it"})
	followup := e.accepted(r)
	u, _ = consoleURL(t, r)
	assert.Equal(t, page(followup), u, "POST /builds/{taskId}/followups")

	r = e.do("POST", "/builds/"+followup+"/cancel", bot, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	u, _ = consoleURL(t, r)
	assert.Equal(t, page(followup), u, "POST /builds/{taskId}/cancel")

	// A list holds summaries, without links.
	r = e.do("GET", "/projects/"+p.ID+"/builds", bot, nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.NotContains(t, string(r.Body), "console_url")
}

// Without a public URL, no answer has a console_url.
func TestNoConsoleURLWithoutPublicURL(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	bot := e.token("web-bot", p.ID)
	r := e.submit(p.ID, bot, map[string]any{"prompt": "add a pricing page"})
	id := e.accepted(r)
	_, ok := consoleURL(t, r)
	assert.False(t, ok, "202: %s", r.Body)
	r = e.do("GET", "/builds/"+id, bot, nil)
	require.Equal(t, http.StatusOK, r.Status)
	_, ok = consoleURL(t, r)
	assert.False(t, ok, "GET: %s", r.Body)
	r = e.do("POST", "/project/create-and-build", e.admin, map[string]any{
		"project": map[string]any{"name": "fresh"}, "build": map[string]any{"prompt": "first"}})
	e.accepted(r)
	_, ok = consoleURL(t, r)
	assert.False(t, ok, "create-and-build: %s", r.Body)
}
