package api_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// stored counts what a refused request must not have written.
func (e *env) stored() map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for _, table := range []string{"projects", "builds", "build_events", "river_job", "idempotency_keys"} {
		out[table] = e.count(`SELECT count(*) FROM ` + table)
	}
	return out
}

// Hostile input through the real router and Postgres: each request answers
// its 4xx problem+json naming the field (or header, or body) and the rule,
// stores nothing, and the dispatcher keeps serving.
func TestHostileInput(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	r := e.submit(p.ID, e.admin, map[string]any{"prompt": "the one build"})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	var acc schema.BuildAccepted
	r.decode(t, &acc)
	id := acc.TaskID
	before := e.stored()

	deep := `{"prompt":"x","variables":` + strings.Repeat(`{"a":`, 40) + `"x"` + strings.Repeat("}", 40) + "}"
	submit := "/projects/" + p.ID + "/builds"
	type hostile struct {
		name         string
		method, path string
		body         any
		opts         []reqOpt
		status       int
		detail       string // in the detail
		field        string // named in errors, when the rule is a field's
	}
	cases := []hostile{
		// Keys are matched exactly; encoding/json alone would take these as "prompt".
		{"key in capitals", "POST", submit, `{"PROMPT":"x"}`, nil, 422, `PROMPT: unknown field (keys are case-sensitive: did you mean "prompt"?)`, "PROMPT"},
		{"key in capitals beside the real one", "POST", submit, `{"prompt":"x","Prompt":"y"}`, nil, 422, "Prompt: unknown field", "Prompt"},
		{"key folded by Unicode", "POST", submit, "{\"prompt\":\"x\",\"auto_pu\u017fh\":true}", nil, 422, "unknown field", "auto_pu\u017fh"},
		{"key twice", "POST", submit, `{"prompt":"x","prompt":"y"}`, nil, 422, "prompt: appears more than once", "prompt"},
		{"nested key in capitals", "POST", "/project/create-and-build", `{"project":{"name":"n"},"build":{"Prompt":"x"}}`, nil, 422, "build.Prompt: unknown field", "build.Prompt"},
		// UTF-8 only.
		{"charset utf-16", "POST", submit, `{"prompt":"x"}`, []reqOpt{header("Content-Type", "application/json; charset=utf-16")}, 415, "Content-Type: the charset must be utf-8", ""},
		{"charset latin-1", "POST", "/projects", `{"name":"n"}`, []reqOpt{header("Content-Type", "application/json;charset=ISO-8859-1")}, 415, "the charset must be utf-8", ""},
		{"invalid UTF-8", "POST", submit, []byte("{\"prompt\":\"caf\xe9\"}"), nil, 400, "body: must be UTF-8", ""},
		// Text Postgres cannot store.
		{"NUL in prompt", "POST", submit, `{"prompt":"a\u0000b"}`, nil, 422, "prompt: must not contain NUL (U+0000)", "prompt"},
		{"NUL in template", "POST", submit, `{"prompt":"x","template":"default\u0000"}`, nil, 422, "template: must not contain NUL", "template"},
		{"NUL in a variable", "POST", submit, `{"prompt":"x","variables":{"who":"a\u0000"}}`, nil, 422, "variables.who: must not contain NUL", "variables.who"},
		{"NUL in a variable name", "POST", submit, `{"prompt":"x","variables":{"w\u0000":"a"}}`, nil, 422, "variables: keys must not contain NUL", "variables"},
		{"NUL in callback_url", "POST", submit, `{"prompt":"x","callback_url":"https://h/\u0000"}`, nil, 422, "callback_url: must not contain NUL", "callback_url"},
		{"NUL in a build of create-and-build", "POST", "/project/create-and-build", `{"project":{"name":"n"},"build":{"prompt":"\u0000"}}`, nil, 422, "build.prompt: must not contain NUL", "build.prompt"},
		{"NUL in a project of create-and-build", "POST", "/project/create-and-build", `{"project":{"name":"n","git_branch":"m\u0000"},"build":{"prompt":"x"}}`, nil, 422, "project.git_branch: must not contain NUL", "project.git_branch"},
		{"NUL in a cancel reason", "POST", "/builds/" + id + "/cancel", `{"reason":"\u0000"}`, nil, 422, "reason: must not contain NUL", "reason"},
		// Size and shape.
		{"nested too deep", "POST", submit, deep, nil, 400, "body: nested deeper than 32 levels", ""},
		{"two values", "POST", submit, `{"prompt":"x"}{"prompt":"y"}`, nil, 400, "single JSON value", ""},
		{"project body over its limit", "POST", "/projects", `{"name":"n","workdir":"/` + strings.Repeat("w", 512<<10) + `"}`, nil, 413, "body: must be at most 524288 bytes", ""},
		{"cancel body over its limit", "POST", "/builds/" + id + "/cancel", `{"reason":"` + strings.Repeat("r", 9<<10) + `"}`, nil, 413, "body: must be at most 8192 bytes", ""},
		{"cancel in utf-16", "POST", "/builds/" + id + "/cancel", `{"reason":"r"}`, []reqOpt{header("Content-Type", "application/json; charset=utf-16")}, 415, "the charset must be utf-8", ""},
		// Callback URLs no connection can use.
		{"callback port too large", "POST", submit, `{"prompt":"x","callback_url":"https://h:99999/cb"}`, nil, 422, "callback_url: the port must be a number from 1 to 65535", "callback_url"},
		{"callback port zero", "POST", submit, `{"prompt":"x","callback_url":"http://h:0/cb"}`, nil, 422, "callback_url: the port must be a number from 1 to 65535", "callback_url"},
		{"callback port not a number", "POST", submit, `{"prompt":"x","callback_url":"http://h:8o8o/cb"}`, nil, 422, "callback_url: the port must be a number from 1 to 65535", "callback_url"},
		// The Idempotency-Key header.
		{"key not UTF-8", "POST", submit, `{"prompt":"x"}`, []reqOpt{header("Idempotency-Key", "k\xff\xfe")}, 400, "Idempotency-Key: must be valid UTF-8", "Idempotency-Key"},
		{"key too long", "POST", submit, `{"prompt":"x"}`, []reqOpt{header("Idempotency-Key", strings.Repeat("é", 128))}, 400, "Idempotency-Key: must be at most 255 bytes", "Idempotency-Key"},
		{"key not UTF-8 on the alias", "POST", "/project/web/build", `{"prompt":"x"}`, []reqOpt{header("Idempotency-Key", "\xc0")}, 400, "Idempotency-Key: must be valid UTF-8", "Idempotency-Key"},
		// Names and paths that no stored row can have.
		{"NUL in a project name", "POST", "/project/w%00b/build", `{"prompt":"x"}`, nil, 404, "not found", ""},
		{"NUL in an artifact path", "GET", "/builds/" + id + "/artifacts/a%00b", nil, nil, 404, "not found", ""},
		{"invalid UTF-8 in an artifact path", "GET", "/builds/" + id + "/artifacts/a%FFb", nil, nil, 404, "not found", ""},
	}
	for _, f := range []string{"name", "namespace", "pod_name", "pod_selector", "container", "workdir", "git_remote",
		"git_branch", "commit_author_name", "commit_author_email"} {
		body := `{"name":"n","` + f + `":"x\u0000"}`
		if f == "name" {
			body = `{"name":"x\u0000"}`
		}
		cases = append(cases, hostile{"NUL in project " + f, "POST", "/projects", body, nil,
			422, f + ": must not contain NUL (U+0000)", f})
	}
	// Ids other than the canonical lowercase form name nothing, even when
	// they spell the id of a build or project that exists.
	for form, bad := range map[string]func(string) string{
		"urn":        func(s string) string { return "urn:uuid:" + s },
		"uppercase":  strings.ToUpper,
		"braces":     func(s string) string { return "%7B" + s + "%7D" },
		"no hyphens": func(s string) string { return strings.ReplaceAll(s, "-", "") },
	} {
		b, pr := bad(id), bad(p.ID)
		cases = append(cases,
			hostile{"build id " + form, "GET", "/builds/" + b, nil, nil, 404, "ids are lowercase UUIDs", ""},
			hostile{"cancel id " + form, "POST", "/builds/" + b + "/cancel", nil, nil, 404, "ids are lowercase UUIDs", ""},
			hostile{"events id " + form, "GET", "/builds/" + b + "/events", nil, nil, 404, "ids are lowercase UUIDs", ""},
			hostile{"socket id " + form, "GET", "/builds/" + b + "/events/ws", nil, nil, 404, "ids are lowercase UUIDs", ""},
			hostile{"artifact id " + form, "GET", "/builds/" + b + "/artifacts/x.txt", nil, nil, 404, "ids are lowercase UUIDs", ""},
			hostile{"project id " + form, "GET", "/projects/" + pr, nil, nil, 404, "ids are lowercase UUIDs", ""},
			hostile{"list id " + form, "GET", "/projects/" + pr + "/builds", nil, nil, 404, "ids are lowercase UUIDs", ""},
			hostile{"submit id " + form, "POST", "/projects/" + pr + "/builds", `{"prompt":"x"}`, nil, 404, "ids are lowercase UUIDs", ""},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, e.admin, tc.body, tc.opts...)
			require.Equal(t, tc.status, r.Status, "%s", r.Body)
			prob := r.problem(t)
			assert.Equal(t, float64(tc.status), prob["status"])
			assert.Contains(t, prob["type"], "https://kiln.dev/problems/")
			assert.Contains(t, prob["detail"], tc.detail)
			assert.NotEmpty(t, prob["request_id"])
			if tc.field != "" {
				errs, _ := prob["errors"].([]any)
				require.NotEmpty(t, errs, "errors names the field")
				assert.Equal(t, tc.field, errs[0].(map[string]any)["field"])
			}
		})
	}

	t.Run("control characters in the key", func(t *testing.T) {
		// net/http refuses them on the wire; the Lambda front door hands
		// headers over as they came, so the router checks them itself.
		for _, key := range []string{"k\x00", "k\x01", "k\x7f"} {
			req := httptest.NewRequest("POST", submit, strings.NewReader(`{"prompt":"x"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+e.admin)
			req.Header["Idempotency-Key"] = []string{key}
			rec := httptest.NewRecorder()
			e.app.Handler.ServeHTTP(rec, req)
			assert.Equal(t, 400, rec.Code, "%q", key)
			assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
			assert.Contains(t, rec.Body.String(), "Idempotency-Key: must not contain control characters")
		}
	})

	t.Run("runner routes with ids not in canonical form", func(t *testing.T) {
		for _, bad := range []string{"urn:uuid:" + id, strings.ToUpper(id), strings.ReplaceAll(id, "-", ""), "%7B" + id + "%7D"} {
			for _, route := range []struct{ method, suffix string }{{"GET", ""}, {"POST", "/events"}, {"POST", "/result"}, {"POST", "/artifacts"}} {
				req, err := http.NewRequest(route.method, e.srv.URL+schema.RunnerAPIPrefix+bad+route.suffix, strings.NewReader(`{}`))
				require.NoError(t, err)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer kiln_runner")
				res, err := e.srv.Client().Do(req)
				require.NoError(t, err)
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				assert.Equal(t, 404, res.StatusCode, "%s %s: %s", route.method, bad, body)
				assert.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
			}
		}
	})

	t.Run("auth scheme in any case", func(t *testing.T) {
		for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
			r := e.do("GET", "/projects", "", nil, header("Authorization", scheme+" "+e.admin))
			assert.Equal(t, 200, r.Status, scheme)
		}
		r := e.do("GET", "/projects", "", nil, header("Authorization", "Basic "+e.admin))
		assert.Equal(t, 401, r.Status)
		// The event endpoints take the principal from the one authenticator
		// (they used to parse the header a second time, case-sensitively).
		r = e.do("GET", "/builds/"+id+"/events", "", nil, header("Authorization", "bearer "+e.admin))
		assert.Equal(t, 200, r.Status, "%s", r.Body)
	})

	t.Run("declared body over the limit, never sent", func(t *testing.T) {
		// Answered 413 from the headers alone: the client never sends a
		// byte of the body, and the connection is closed, not drained.
		for _, declared := range []string{"2000000", "300000000"} {
			c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
			_, err = io.WriteString(c, "POST "+submit+" HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer "+e.admin+
				"\r\nContent-Type: application/json\r\nContent-Length: "+declared+"\r\n\r\n")
			require.NoError(t, err)
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			require.NoError(t, err, "answered without the body")
			body, _ := io.ReadAll(res.Body)
			assert.Equal(t, 413, res.StatusCode, "%s", body)
			assert.Contains(t, string(body), "body: must be at most 1048576 bytes")
			assert.True(t, res.Close)
			_, err = br.ReadByte()
			assert.ErrorIs(t, err, io.EOF, "the connection is closed")
		}
	})

	assert.Equal(t, before, e.stored(), "no refused request stored anything")
	assert.NotContains(t, e.logs.String(), `"level":"ERROR"`, "no refusal was an internal error")
	r = e.submit(p.ID, e.admin, map[string]any{"prompt": "still serving", "callback_url": "https://h:8443/cb"},
		header("Idempotency-Key", "clé-✓"))
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	r = e.do("GET", "/builds/"+id, "", nil, header("Authorization", "bearer "+e.admin))
	require.Equal(t, http.StatusOK, r.Status)
}
