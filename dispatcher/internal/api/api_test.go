package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/schema"
)

func TestProjects(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	assert.Equal(t, "web", p.Name)
	assert.Equal(t, "default", p.Namespace)
	assert.Equal(t, "/workspace", p.Workdir)
	assert.Equal(t, 1, p.MaxConcurrent)
	assert.True(t, strings.HasPrefix(p.CallbackSecret, "kcs_"), "callback secret shown on create")

	r := e.do("GET", "/projects/"+p.ID, e.admin, nil)
	require.Equal(t, 200, r.Status)
	var got schema.Project
	r.decode(t, &got)
	assert.Equal(t, p.ID, got.ID)
	assert.Empty(t, got.CallbackSecret, "callback secret is shown only once")

	r = e.do("POST", "/projects", e.admin, map[string]any{"name": "web"})
	assert.Equal(t, http.StatusConflict, r.Status)

	r = e.do("POST", "/projects", e.admin, map[string]any{"name": "Not A Label", "workdir": "rel"})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	prob := r.problem(t)
	assert.Contains(t, prob["detail"], "name: must be a DNS label")
	assert.Contains(t, prob["detail"], "workdir: must be an absolute path")

	other := e.project("api")
	scoped := e.token("web-bot", p.ID)
	r = e.do("POST", "/projects", scoped, map[string]any{"name": "mine"})
	assert.Equal(t, http.StatusForbidden, r.Status, "project tokens cannot create projects")

	r = e.do("GET", "/projects", scoped, nil)
	require.Equal(t, 200, r.Status)
	var list struct{ Projects []schema.Project }
	r.decode(t, &list)
	require.Len(t, list.Projects, 1)
	assert.Equal(t, "web", list.Projects[0].Name)

	r = e.do("GET", "/projects/"+other.ID, scoped, nil)
	assert.Equal(t, http.StatusNotFound, r.Status, "another project answers 404 as if absent")

	r = e.do("GET", "/projects", e.admin, nil)
	r.decode(t, &list)
	assert.Len(t, list.Projects, 2)
}

func TestSubmitAndGetBuild(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	bot := e.token("web-bot", p.ID)
	spec := map[string]any{"prompt": "make the heading say {{who}}", "variables": map[string]string{"who": "Acme"},
		"auto_commit": true, "auto_push": true, "callback_url": "https://bots.example/cb"}
	r := e.submit(p.ID, bot, spec)
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	var acc schema.BuildAccepted
	r.decode(t, &acc)
	assert.Equal(t, schema.StatusPending, acc.Status)
	assert.Equal(t, "/builds/"+acc.TaskID, r.Header.Get("Location"))

	r = e.do("GET", "/builds/"+acc.TaskID, bot, nil)
	require.Equal(t, 200, r.Status)
	var b schema.Build
	r.decode(t, &b)
	assert.Equal(t, acc.TaskID, b.ID)
	assert.Equal(t, p.ID, b.ProjectID)
	assert.Equal(t, schema.StatusPending, b.Status)
	assert.Equal(t, "default", b.Spec.Template, "template defaults to default")
	assert.Equal(t, "Acme", b.Spec.Variables["who"])
	assert.True(t, b.Spec.AutoCommit)
	assert.Equal(t, "web-bot", b.RequestedBy)

	assert.Equal(t, 1, e.count(`SELECT count(*) FROM river_job WHERE kind = 'kiln_dispatch' AND args->>'build_id' = $1`, acc.TaskID),
		"the River job exists")

	// The alias older bots use.
	r = e.do("POST", "/project/web/build", bot, map[string]any{"prompt": "again"})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	r = e.do("POST", "/project/nope/build", bot, map[string]any{"prompt": "again"})
	assert.Equal(t, http.StatusNotFound, r.Status)

	r = e.do("GET", "/builds/"+acc.TaskID+"/events", bot, nil)
	require.Equal(t, 200, r.Status)
	var evs struct{ Events []schema.Event }
	r.decode(t, &evs)
	require.Len(t, evs.Events, 1)
	assert.Equal(t, int64(1), evs.Events[0].Seq)
	assert.JSONEq(t, `{"status":"pending"}`, string(evs.Events[0].Payload))
}

func TestValidation(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprintf("v%d", i)] = "x"
	}
	cases := []struct {
		name   string
		body   any
		opts   []reqOpt
		status int
		want   string // in detail
	}{
		{"prompt missing", map[string]any{"auto_commit": true}, nil, 422, "prompt: required"},
		{"prompt blank", map[string]any{"prompt": "   "}, nil, 422, "prompt: required"},
		{"prompt too long", map[string]any{"prompt": strings.Repeat("a", 256<<10+1)}, nil, 422, "prompt: must be at most 262144 bytes"},
		{"unknown template", map[string]any{"prompt": "x", "template": "nope"}, nil, 422, `template: unknown template "nope"`},
		{"too many variables", map[string]any{"prompt": "x", "variables": many}, nil, 422, "variables: must have at most 64 keys"},
		{"variable not a string", `{"prompt":"x","variables":{"a":1}}`, nil, 422, "variables: values must be strings, got JSON number"},
		{"bad variable name", map[string]any{"prompt": "x", "variables": map[string]string{"a-b": "1"}}, nil, 422, `variables: key "a-b" must match`},
		{"relative callback", map[string]any{"prompt": "x", "callback_url": "/cb"}, nil, 422, "callback_url: must be an absolute http(s) URL"},
		{"ftp callback", map[string]any{"prompt": "x", "callback_url": "ftp://h/x"}, nil, 422, "callback_url: must be an absolute http(s) URL"},
		{"unknown field", map[string]any{"prompt": "x", "promt": "y"}, nil, 422, "promt: unknown field"},
		{"auto_commit not bool", `{"prompt":"x","auto_commit":"yes"}`, nil, 422, "auto_commit: must be a boolean"},
		{"malformed", "{\n  \"prompt\": \"x\",\n  oops\n}", nil, 400, "malformed JSON at line 3, column 3"},
		{"truncated", `{"prompt": "x"`, nil, 400, "malformed JSON: unexpected end"},
		{"empty", "", nil, 400, "body: required"},
		{"two values", `{"prompt":"x"} {}`, nil, 400, "single JSON value"},
		{"too large", map[string]any{"prompt": strings.Repeat("a", 1<<20)}, nil, 413, "body: must be at most 1048576 bytes"},
		{"wrong content type", map[string]any{"prompt": "x"}, []reqOpt{header("Content-Type", "text/plain")}, 415, "Content-Type: must be application/json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if body == "" {
				body = []byte{}
			}
			r := e.submit(p.ID, e.admin, body, tc.opts...)
			require.Equal(t, tc.status, r.Status, "%s", r.Body)
			prob := r.problem(t)
			assert.Contains(t, prob["detail"], tc.want)
			assert.NotEmpty(t, prob["request_id"])
			assert.Equal(t, float64(tc.status), prob["status"])
		})
	}
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM builds`), "no rejected build was stored")
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM river_job`), "no rejected build was queued")

	r := e.submit("0190f1c5-0000-7000-8000-000000000000", e.admin, map[string]any{"prompt": "x"})
	assert.Equal(t, 404, r.Status)
	r = e.do("GET", "/builds/0190f1c5-0000-7000-8000-000000000000", e.admin, nil)
	assert.Equal(t, 404, r.Status)
	r = e.do("GET", "/builds/not-a-uuid", e.admin, nil)
	assert.Equal(t, 404, r.Status)
	r = e.do("POST", "/projects/"+p.ID+"/builds", e.admin, map[string]any{"prompt": "x"}, header("Idempotency-Key", strings.Repeat("k", 256)))
	assert.Equal(t, 400, r.Status)
}

func TestAuth(t *testing.T) {
	e := setup(t)
	web := e.project("web")
	api := e.project("api")
	webBot := e.token("web-bot", web.ID)
	apiBot := e.token("api-bot", api.ID)

	r := e.do("GET", "/projects", "", nil)
	assert.Equal(t, 401, r.Status)
	assert.Contains(t, r.Header.Get("WWW-Authenticate"), "Bearer")
	r = e.do("GET", "/projects", "kiln_not-a-real-token", nil)
	assert.Equal(t, 401, r.Status)
	r = e.do("GET", "/projects", "garbage", nil)
	assert.Equal(t, 401, r.Status)

	r = e.submit(web.ID, webBot, map[string]any{"prompt": "x"})
	require.Equal(t, 202, r.Status)
	var acc schema.BuildAccepted
	r.decode(t, &acc)

	for _, c := range []struct{ method, path string }{
		{"GET", "/builds/" + acc.TaskID},
		{"POST", "/builds/" + acc.TaskID + "/cancel"},
		{"GET", "/builds/" + acc.TaskID + "/events"},
		{"GET", "/projects/" + web.ID + "/builds"},
		{"GET", "/projects/" + web.ID},
	} {
		r := e.do(c.method, c.path, apiBot, nil)
		assert.Equal(t, 404, r.Status, "%s %s with another project's token", c.method, c.path)
	}
	r = e.submit(web.ID, apiBot, map[string]any{"prompt": "x"})
	assert.Equal(t, 404, r.Status)
	r = e.do("POST", "/project/web/build", apiBot, map[string]any{"prompt": "x"})
	assert.Equal(t, 404, r.Status)

	r = e.do("GET", "/builds/"+acc.TaskID, webBot, nil)
	assert.Equal(t, 200, r.Status)
	r = e.do("GET", "/builds/"+acc.TaskID, e.admin, nil)
	assert.Equal(t, 200, r.Status, "admins see every build")

	// Tokens are stored hashed: no column holds the token itself.
	assert.Equal(t, 0, e.count(`SELECT count(*) FROM api_tokens WHERE token_hash::text LIKE '%' || $1 || '%' OR name = $1`, webBot))
	assert.NotContains(t, e.logs.String(), webBot, "tokens never reach the logs")
	assert.NotContains(t, e.logs.String(), e.admin)
}

func TestIdempotencyKey(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	spec := map[string]any{"prompt": "once only"}
	key := header("Idempotency-Key", "req-42")

	r1 := e.submit(p.ID, e.admin, spec, key)
	require.Equal(t, 202, r1.Status)
	r2 := e.submit(p.ID, e.admin, spec, key)
	require.Equal(t, 202, r2.Status)
	var a1, a2 schema.BuildAccepted
	r1.decode(t, &a1)
	r2.decode(t, &a2)
	assert.Equal(t, a1.TaskID, a2.TaskID)
	assert.Equal(t, "true", r2.Header.Get("Idempotent-Replayed"))
	assert.Equal(t, 1, e.count(`SELECT count(*) FROM builds`))
	assert.Equal(t, 1, e.count(`SELECT count(*) FROM river_job`))

	r3 := e.submit(p.ID, e.admin, map[string]any{"prompt": "something else"}, key)
	require.Equal(t, 422, r3.Status)
	assert.Contains(t, r3.problem(t)["detail"], "Idempotency-Key: already used with a different request body")

	// Keys are per token: another token may use the same key.
	other := e.token("other", p.ID)
	r4 := e.submit(p.ID, other, spec, key)
	require.Equal(t, 202, r4.Status)
	var a4 schema.BuildAccepted
	r4.decode(t, &a4)
	assert.NotEqual(t, a1.TaskID, a4.TaskID)
}

func TestCreateAndBuild(t *testing.T) {
	e := setup(t)
	r := e.do("POST", "/project/create-and-build", e.admin, map[string]any{
		"project": map[string]any{"name": "fresh", "git_branch": "trunk"},
		"build":   map[string]any{"prompt": "first"},
	})
	require.Equal(t, 202, r.Status, "%s", r.Body)
	var out struct {
		TaskID  string         `json:"task_id"`
		Project schema.Project `json:"project"`
	}
	r.decode(t, &out)
	assert.Equal(t, "trunk", out.Project.GitBranch)
	assert.NotEmpty(t, out.Project.CallbackSecret)
	r = e.do("GET", "/builds/"+out.TaskID, e.admin, nil)
	require.Equal(t, 200, r.Status)

	// A project name that exists: neither a second project nor a build.
	r = e.do("POST", "/project/create-and-build", e.admin, map[string]any{
		"project": map[string]any{"name": "fresh"}, "build": map[string]any{"prompt": "second"},
	})
	assert.Equal(t, 409, r.Status)
	// An invalid build: no project is left behind.
	r = e.do("POST", "/project/create-and-build", e.admin, map[string]any{
		"project": map[string]any{"name": "other"}, "build": map[string]any{"prompt": ""},
	})
	require.Equal(t, 422, r.Status)
	assert.Contains(t, r.problem(t)["detail"], "build.prompt: required")
	assert.Equal(t, 1, e.count(`SELECT count(*) FROM projects`))
	assert.Equal(t, 1, e.count(`SELECT count(*) FROM builds`))
	assert.Equal(t, 1, e.count(`SELECT count(*) FROM river_job`))

	p := e.project("web")
	bot := e.token("bot", p.ID)
	r = e.do("POST", "/project/create-and-build", bot, map[string]any{
		"project": map[string]any{"name": "nope"}, "build": map[string]any{"prompt": "x"},
	})
	assert.Equal(t, 403, r.Status)
}

func TestCancelPending(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	r := e.submit(p.ID, e.admin, map[string]any{"prompt": "x"})
	var acc schema.BuildAccepted
	r.decode(t, &acc)

	r = e.do("POST", "/builds/"+acc.TaskID+"/cancel", e.admin, map[string]any{"reason": "changed my mind"})
	require.Equal(t, 200, r.Status, "%s", r.Body)
	var b schema.Build
	r.decode(t, &b)
	assert.Equal(t, schema.StatusCancelled, b.Status)
	assert.Equal(t, "changed my mind", b.Error)
	require.NotNil(t, b.FinishedAt)
	// The River job is cancelled with the build, or — when a worker held it at
	// that moment — ends without launching anything. Either way it is final.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var state string
		require.NoError(t, e.db.Pool.QueryRow(context.Background(),
			`SELECT state FROM river_job WHERE args->>'build_id' = $1`, acc.TaskID).Scan(&state))
		if state == "cancelled" || state == "completed" {
			break
		}
		require.True(t, time.Now().Before(deadline), "river job still %s", state)
		time.Sleep(50 * time.Millisecond)
	}
	r = e.do("POST", "/builds/"+acc.TaskID+"/cancel", e.admin, nil)
	assert.Equal(t, 409, r.Status, "a terminal build cannot be cancelled again")

	r = e.do("GET", "/builds/"+acc.TaskID+"/events?after=1", e.admin, nil)
	var evs struct{ Events []schema.Event }
	r.decode(t, &evs)
	require.Len(t, evs.Events, 1)
	assert.Equal(t, int64(2), evs.Events[0].Seq)
	assert.Contains(t, string(evs.Events[0].Payload), `"cancelled"`)
}

func TestListBuildsPagination(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	var ids []string
	for i := range 25 {
		r := e.submit(p.ID, e.admin, map[string]any{"prompt": fmt.Sprintf("build %d", i)})
		var acc schema.BuildAccepted
		r.decode(t, &acc)
		ids = append(ids, acc.TaskID)
	}
	// Cancel three so the status filter has something to find.
	for _, id := range ids[:3] {
		require.Equal(t, 200, e.do("POST", "/builds/"+id+"/cancel", e.admin, nil).Status)
	}
	var seen []string
	cursor := ""
	pages := 0
	for {
		path := "/projects/" + p.ID + "/builds?limit=10"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := e.do("GET", path, e.admin, nil)
		require.Equal(t, 200, r.Status, "%s", r.Body)
		var page struct {
			Builds     []schema.Build
			NextCursor string `json:"next_cursor"`
		}
		r.decode(t, &page)
		pages++
		for _, b := range page.Builds {
			seen = append(seen, b.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	assert.Equal(t, 3, pages)
	require.Len(t, seen, 25)
	for i, id := range seen {
		assert.Equal(t, ids[24-i], id, "newest first, no gaps or repeats")
	}

	r := e.do("GET", "/projects/"+p.ID+"/builds?status=cancelled", e.admin, nil)
	var page struct{ Builds []schema.Build }
	r.decode(t, &page)
	assert.Len(t, page.Builds, 3)
	for _, b := range page.Builds {
		assert.Equal(t, schema.StatusCancelled, b.Status)
	}
	for _, q := range []string{"limit=101", "limit=0", "limit=x", "status=done", "cursor=zzz"} {
		r := e.do("GET", "/projects/"+p.ID+"/builds?"+q, e.admin, nil)
		assert.Equal(t, 422, r.Status, q)
	}
}

func TestHealthAndReady(t *testing.T) {
	e := setup(t)
	assert.Equal(t, 200, e.do("GET", "/healthz", "", nil).Status)
	assert.Equal(t, 200, e.do("GET", "/readyz", "", nil).Status)
	r := e.do("GET", "/openapi.yaml", "", nil)
	require.Equal(t, 200, r.Status)
	assert.Contains(t, string(r.Body), "openapi: 3.1.0")
	require.NoError(t, e.app.Stop(context.Background()))
	r = e.do("GET", "/readyz", "", nil)
	assert.Equal(t, 503, r.Status)
}

func TestRequestLogs(t *testing.T) {
	e := setup(t)
	r := e.do("GET", "/projects", e.admin, nil, header("X-Request-Id", "trace-abc-123"))
	require.Equal(t, 200, r.Status)
	assert.Equal(t, "trace-abc-123", r.Header.Get("X-Request-Id"))
	logs := e.logs.String()
	assert.Contains(t, logs, `"request_id":"trace-abc-123"`)
	assert.Contains(t, logs, `"route":"/projects"`)
	assert.Contains(t, logs, `"token":"`+apptest.AdminName+`"`)
	assert.NotContains(t, logs, e.admin)
}
