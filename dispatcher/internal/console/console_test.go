package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/ratelimit"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

// visitor is a browser as the console sees it: a session cookie (once
// signed in), redirects not followed, so each answer is seen.
type visitor struct {
	t      *testing.T
	e      *apptest.Env
	cookie *http.Cookie
	http   *http.Client
}

func newVisitor(t *testing.T, e *apptest.Env) *visitor {
	return &visitor{t: t, e: e, http: &http.Client{Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	*http.Response
	Body string
}

func (v *visitor) do(method, path string, form url.Values, header ...string) *answer {
	v.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, v.e.Server.URL+path, body)
	require.NoError(v.t, err)
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if v.cookie != nil {
		req.AddCookie(v.cookie)
	}
	resp, err := v.http.Do(req)
	require.NoError(v.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(v.t, err)
	return &answer{Response: resp, Body: string(b)}
}

func (v *visitor) get(path string) *answer { v.t.Helper(); return v.do(http.MethodGet, path, nil) }

// signIn signs in with token and keeps the session cookie.
func (v *visitor) signIn(token string) {
	v.t.Helper()
	a := v.do(http.MethodPost, "/ui/login", url.Values{"token": {token}, "next": {"/ui/"}})
	require.Equal(v.t, http.StatusSeeOther, a.StatusCode, a.Body)
	for _, c := range a.Cookies() {
		if c.Name == "kiln_session" {
			v.cookie = c
		}
	}
	require.NotNil(v.t, v.cookie, "a session cookie")
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	require.NotNil(t, m, "the page has a CSRF field")
	return m[1]
}

func TestSignInMakesASessionBoundToTheToken(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1, ConsoleSessionTTL: time.Hour})
	e.Project("acme")
	v := newVisitor(t, e)

	a := v.get("/ui/")
	assert.Equal(t, http.StatusSeeOther, a.StatusCode, "a page load without a session goes to sign-in")
	assert.Equal(t, "/ui/login?next=%2Fui%2F", a.Header.Get("Location"))
	api := v.do(http.MethodGet, "/ui/", nil, "Accept", "application/json")
	assert.Equal(t, http.StatusUnauthorized, api.StatusCode, "a script's request gets 401, not a page")

	bad := v.do(http.MethodPost, "/ui/login", url.Values{"token": {"kiln_nope"}})
	assert.Equal(t, http.StatusUnauthorized, bad.StatusCode)
	assert.Contains(t, bad.Body, "That token is not valid")
	assert.NotContains(t, bad.Body, "kiln_nope", "a token typed in is never echoed")

	cross := v.do(http.MethodPost, "/ui/login", url.Values{"token": {e.Admin}}, "Sec-Fetch-Site", "cross-site")
	assert.Equal(t, http.StatusForbidden, cross.StatusCode, "a sign-in posted from another site (login CSRF)")

	v.signIn(e.Admin)
	c := v.cookie
	assert.True(t, c.HttpOnly, "HttpOnly")
	assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
	assert.False(t, c.Secure, "not Secure on plain HTTP, where a browser would drop it")
	assert.InDelta(t, time.Hour.Seconds(), float64(c.MaxAge), 5, "it expires with the session TTL")
	assert.Equal(t, "/", c.Path)
	assert.NotContains(t, c.Value, e.Admin, "the cookie is not the token")

	home := v.get("/ui/")
	require.Equal(t, http.StatusOK, home.StatusCode, home.Body)
	assert.Contains(t, home.Body, "acme")
	assert.NotContains(t, home.Body, e.Admin, "no token in page source")
	assert.NotContains(t, home.Body, c.Value, "nor the session id")

	// Signing in again from the same browser replaces its session; a
	// session's use counts as its token's.
	v.signIn(e.Admin)
	var sessions int
	var used *time.Time
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM console_sessions`).Scan(&sessions))
	assert.Equal(t, 1, sessions, "the earlier session is gone")
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT last_used_at FROM api_tokens WHERE name = 'admin-bot'`).Scan(&used))
	assert.NotNil(t, used)

	// Revoking the token ends the session at once.
	_, _, err := store.RevokeToken(context.Background(), e.DB.Pool, tokenID(t, e, "admin-bot"))
	require.NoError(t, err)
	after := v.get("/ui/")
	assert.Equal(t, http.StatusSeeOther, after.StatusCode, "the revoked token's session is refused")
}

func tokenID(t *testing.T, e *apptest.Env, name string) string {
	t.Helper()
	var id string
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT id::text FROM api_tokens WHERE name = $1`, name).Scan(&id))
	return id
}

func TestSignOutEndsTheSession(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	v := newVisitor(t, e)
	v.signIn(e.Admin)
	home := v.get("/ui/")
	require.Equal(t, http.StatusOK, home.StatusCode)
	csrf := csrfOf(t, home.Body)

	refused := v.do(http.MethodPost, "/ui/logout", url.Values{"csrf": {"not-it"}})
	assert.Equal(t, http.StatusForbidden, refused.StatusCode, "a sign-out without the session's CSRF token")
	out := v.do(http.MethodPost, "/ui/logout", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusSeeOther, out.StatusCode, out.Body)
	assert.Equal(t, "/ui/login", out.Header.Get("Location"))
	assert.Equal(t, http.StatusSeeOther, v.get("/ui/").StatusCode, "the old cookie no longer works")
	var n int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM console_sessions`).Scan(&n))
	assert.Zero(t, n, "the session row is gone")
}

func TestSecurityHeaders(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	v := newVisitor(t, e)
	for _, path := range []string{"/ui/login", "/ui/"} {
		a := v.get(path)
		csp := a.Header.Get("Content-Security-Policy")
		assert.Contains(t, csp, "script-src 'self'", path)
		assert.NotContains(t, csp, "unsafe-inline", path)
		assert.Contains(t, csp, "frame-ancestors 'none'", path)
		assert.Equal(t, "DENY", a.Header.Get("X-Frame-Options"), path)
		assert.Equal(t, "nosniff", a.Header.Get("X-Content-Type-Options"), path)
	}
	login := v.get("/ui/login")
	assert.NotRegexp(t, `<script>|<script [^>]*>[^<]+</script>|\son[a-z]+=|style=`, login.Body, "no inline script, handler or style")
}

func TestLoginRedirectStaysOnTheConsole(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	for next, want := range map[string]string{
		"/ui/projects/x":        "/ui/projects/x",
		"/riverui/":             "/riverui/",
		"//evil.example/ui/":    "/ui/",
		"https://evil.example/": "/ui/",
		"/\\evil.example":       "/ui/",
		"/api/../../etc":        "/ui/",
		"/ui/../projects":       "/ui/",
		"javascript:alert(1)":   "/ui/",
		"":                      "/ui/",
	} {
		v := newVisitor(t, e)
		a := v.do(http.MethodPost, "/ui/login", url.Values{"token": {e.Admin}, "next": {next}})
		require.Equal(t, http.StatusSeeOther, a.StatusCode, next)
		assert.Equal(t, want, a.Header.Get("Location"), "next %q", next)
	}
}

func TestAProjectTokenSeesOnlyItsProjects(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	mine, theirs := e.Project("mine"), e.Project("theirs")
	other := e.Pending(theirs.ID, schema.BuildSpec{Prompt: "secret plans"})
	own := e.Pending(mine.ID, schema.BuildSpec{Prompt: "my build"})
	v := newVisitor(t, e)
	v.signIn(e.Token("mine-bot", mine.ID))

	home := v.get("/ui/")
	assert.Contains(t, home.Body, ">mine<")
	assert.NotContains(t, home.Body, "theirs")
	assert.Equal(t, http.StatusOK, v.get("/ui/builds/"+own).StatusCode)
	for _, path := range []string{"/ui/builds/" + other, "/ui/projects/" + theirs.ID, "/ui/builds/" + other + "/events",
		"/ui/builds/not-an-id"} {
		a := v.get(path)
		assert.Equal(t, http.StatusNotFound, a.StatusCode, path)
		assert.Contains(t, a.Body, "404", path)
		assert.NotContains(t, a.Body, "secret plans", path)
	}
	csrf := csrfOf(t, v.get("/ui/").Body)
	c := v.do(http.MethodPost, "/ui/builds/"+other+"/cancel", url.Values{"csrf": {csrf}})
	assert.Equal(t, http.StatusNotFound, c.StatusCode, "cancelling another project's build")
	assert.Equal(t, schema.StatusPending, e.Get(other).Status)

	river := v.get("/riverui/")
	assert.Equal(t, http.StatusForbidden, river.StatusCode, "the River UI is for admins")
	riverAPI := v.do(http.MethodGet, "/riverui/api/jobs?state=available", nil, "Accept", "application/json")
	assert.Equal(t, http.StatusForbidden, riverAPI.StatusCode)
}

func TestCancelFromTheConsoleNeedsTheCSRFToken(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	p := e.Project("acme")
	id := e.Pending(p.ID, schema.BuildSpec{Prompt: "p"})
	v := newVisitor(t, e)
	v.signIn(e.Admin)
	page := v.get("/ui/builds/" + id)
	require.Equal(t, http.StatusOK, page.StatusCode)
	csrf := csrfOf(t, page.Body)

	assert.Equal(t, http.StatusForbidden, v.do(http.MethodPost, "/ui/builds/"+id+"/cancel", url.Values{}).StatusCode, "no token")
	assert.Equal(t, http.StatusForbidden, v.do(http.MethodPost, "/ui/builds/"+id+"/cancel",
		url.Values{"csrf": {csrf}}, "Sec-Fetch-Site", "cross-site").StatusCode, "from another site")
	assert.Equal(t, schema.StatusPending, e.Get(id).Status, "nothing was cancelled")

	ok := v.do(http.MethodPost, "/ui/builds/"+id+"/cancel", url.Values{"csrf": {csrf}, "reason": {"wrong prompt"}})
	require.Equal(t, http.StatusSeeOther, ok.StatusCode, ok.Body)
	assert.Equal(t, "/ui/builds/"+id+"?done=cancelled", ok.Header.Get("Location"))
	b := e.Wait(id, schema.StatusCancelled)
	assert.Contains(t, b.Error, "wrong prompt")

	again := v.do(http.MethodPost, "/ui/builds/"+id+"/cancel", url.Values{"csrf": {csrf}})
	assert.Equal(t, http.StatusConflict, again.StatusCode, "cancelling a cancelled build")
	assert.Contains(t, again.Body, "terminal")
}

func TestHostileContentIsText(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	p := e.Project("acme")
	hostile := "<script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">x</a> txt.\u202Eexe"
	id := e.Pending(p.ID, schema.BuildSpec{Prompt: hostile})
	v := newVisitor(t, e)
	v.signIn(e.Admin)
	page := v.get("/ui/builds/" + id)
	require.Equal(t, http.StatusOK, page.StatusCode)
	assert.Contains(t, page.Body, "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;")
	assert.Contains(t, html.UnescapeString(page.Body), "txt.[U+202E]exe", "the RTL override is shown, not obeyed")
	assert.NotContains(t, page.Body, "<script>alert")
	assert.NotContains(t, page.Body, "<img src=x")
	assert.NotContains(t, page.Body, "\u202E")
}

func TestBuildsListPagesAsTheAPIDoes(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	p := e.Project("acme")
	for range 23 {
		e.Pending(p.ID, schema.BuildSpec{Prompt: "p"})
	}
	v := newVisitor(t, e)
	v.signIn(e.Admin)
	first := v.get("/ui/projects/" + p.ID + "?status=pending")
	require.Equal(t, http.StatusOK, first.StatusCode, first.Body)
	assert.Equal(t, 20, strings.Count(first.Body, `<tr class="b-pending">`))
	assert.Contains(t, first.Body, "#1 in queue")
	next := regexp.MustCompile(`href="([^"]+)" rel="next"`).FindStringSubmatch(first.Body)
	require.NotNil(t, next, "a next page link")
	second := v.get(strings.ReplaceAll(next[1], "&amp;", "&"))
	require.Equal(t, http.StatusOK, second.StatusCode, second.Body)
	assert.Equal(t, 3, strings.Count(second.Body, `<tr class="b-pending">`))
	assert.NotContains(t, second.Body, `rel="next"`)
	assert.Contains(t, second.Body, "#23 in queue")

	bad := v.get("/ui/projects/" + p.ID + "?status=sleeping")
	assert.Equal(t, http.StatusUnprocessableEntity, bad.StatusCode)
	assert.Contains(t, bad.Body, "status: must be one of")
	none := v.get("/ui/projects/" + p.ID + "?status=failed")
	assert.Contains(t, none.Body, "No builds failed.")
}

func TestRiverUIOpensWithAnAdminSession(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	v := newVisitor(t, e)
	a := v.get("/riverui/")
	assert.Equal(t, http.StatusSeeOther, a.StatusCode, "to sign-in first")
	assert.Equal(t, "/ui/login?next=%2Friverui%2F", a.Header.Get("Location"))
	v.signIn(e.Admin)
	ui := v.get("/riverui/")
	require.Equal(t, http.StatusOK, ui.StatusCode)
	assert.Equal(t, "DENY", ui.Header.Get("X-Frame-Options"))
	jobs := v.do(http.MethodGet, "/riverui/api/jobs?state=available&limit=5", nil, "Accept", "application/json")
	assert.Equal(t, http.StatusOK, jobs.StatusCode, jobs.Body)
}

func TestProjectsAndOverviewPages(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	p := e.Project("acme")
	for range 3 {
		e.Pending(p.ID, schema.BuildSpec{Prompt: "p"})
	}
	done := e.Pending(p.ID, schema.BuildSpec{Prompt: "p", Template: "docs"})
	_, err := e.DB.Pool.Exec(context.Background(), `UPDATE builds SET status = 'completed',
		started_at = now() - interval '90 seconds', finished_at = now(), cost_usd = 0.25 WHERE id = $1`, done)
	require.NoError(t, err)
	v := newVisitor(t, e)
	v.signIn(e.Admin)

	home := v.get("/ui/")
	require.Equal(t, http.StatusOK, home.StatusCode)
	row := regexp.MustCompile(`(?s)<tr>\s*<th scope="row"><a href="/ui/projects/` + p.ID + `">acme</a>.*?</tr>`).FindString(home.Body)
	require.NotEmpty(t, row, home.Body)
	assert.Regexp(t, `<td class="num">0</td>\s*<td class="num">3</td>`, row, "running 0, pending 3")
	assert.Contains(t, row, "$0.25", "this month's spend")

	o := v.get("/ui/overview")
	require.Equal(t, http.StatusOK, o.StatusCode, o.Body)
	assert.Equal(t, 2, strings.Count(o.Body, "<svg "), "two charts")
	assert.Contains(t, o.Body, "<th scope=\"row\">docs</th><td class=\"num\">1</td><td class=\"num\">1 min 30 s</td>")
	assert.Contains(t, o.Body, "4 builds (1 completed, 0 failed, 0 cancelled)", "the hour's bar says what it holds")
	assert.NotContains(t, o.Body, "style=", "no inline style (the CSP refuses it)")
}

// An event stream opened with a console session ends within a heartbeat of
// signing out, as it does when the token is revoked.
func TestSignOutEndsOpenStreams(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1, EventHeartbeat: 200 * time.Millisecond})
	p := e.Project("acme")
	id := e.Pending(p.ID, schema.BuildSpec{Prompt: "p"})
	v := newVisitor(t, e)
	v.signIn(e.Admin)
	csrf := csrfOf(t, v.get("/ui/").Body)

	req, err := http.NewRequest(http.MethodGet, e.Server.URL+"/ui/builds/"+id+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.AddCookie(v.cookie)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		buf := make([]byte, 4096)
		for {
			n, err := res.Body.Read(buf)
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				lines <- l
			}
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(want string) bool {
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					return false
				}
				if strings.Contains(l, want) {
					return true
				}
			case <-ctx.Done():
				return false
			}
		}
	}
	require.True(t, waitFor("event: status"), "the stream replays the build's events")
	require.Equal(t, http.StatusSeeOther, v.do(http.MethodPost, "/ui/logout", url.Values{"csrf": {csrf}}).StatusCode)
	assert.True(t, waitFor("event: unauthorized"), "the stream ends once its session has")
}

// On a console served over https (KILN_PUBLIC_URL), only the __Host-
// cookie counts: a plain kiln_session cookie, which a sibling subdomain or
// a man in the middle could plant, signs nobody in.
func TestSecureConsoleTakesOnlyTheHostCookie(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1, PublicURL: "https://kiln.example.com"})
	v := newVisitor(t, e)
	a := v.do(http.MethodPost, "/ui/login", url.Values{"token": {e.Admin}})
	require.Equal(t, http.StatusSeeOther, a.StatusCode, a.Body)
	var host *http.Cookie
	for _, c := range a.Cookies() {
		if c.Name == "__Host-kiln_session" {
			host = c
		}
	}
	require.NotNil(t, host, "the __Host- cookie")
	assert.True(t, host.Secure)
	assert.Empty(t, host.Domain)
	v.cookie = host
	home := v.get("/ui/")
	assert.Equal(t, http.StatusOK, home.StatusCode)
	assert.Equal(t, "max-age=31536000", home.Header.Get("Strict-Transport-Security"))

	v.cookie = &http.Cookie{Name: "kiln_session", Value: host.Value}
	assert.Equal(t, http.StatusSeeOther, v.get("/ui/").StatusCode, "the plain cookie is not the secure console's")

	// Behind a proxy that rewrites Host, the public URL's origin is the one
	// whose writes are taken.
	v.cookie = host
	csrf := csrfOf(t, home.Body)
	out := func(origin string) int {
		return v.do(http.MethodPost, "/ui/logout", url.Values{"csrf": {csrf}}, "Sec-Fetch-Site", "", "Origin", origin).StatusCode
	}
	assert.Equal(t, http.StatusForbidden, out("https://evil.example"), "another origin")
	assert.Equal(t, http.StatusSeeOther, out("https://kiln.example.com"), "the public URL's origin")
}

// A proxy's Basic credentials beside the session cookie do not hide it; a
// Bearer token wins over the cookie, and a bad one is refused.
func TestAuthorizationSchemes(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	v := newVisitor(t, e)
	v.signIn(e.Admin)
	assert.Equal(t, http.StatusOK, v.do(http.MethodGet, "/ui/", nil, "Authorization", "Basic dXNlcjpwYXNz").StatusCode)
	assert.Equal(t, http.StatusUnauthorized, v.do(http.MethodGet, "/ui/", nil, "Authorization", "Bearer kiln_nope").StatusCode)
	v.cookie = nil
	assert.Equal(t, http.StatusOK, v.do(http.MethodGet, "/ui/", nil, "Authorization", "Bearer "+e.Admin).StatusCode,
		"a script fetches pages with its token")
}

// A signed-in person's requests are not charged to the per-address limit of
// requests without a credential: a flood of anonymous requests from the same
// address (a shared NAT) does not lock the console's users out.
func TestSessionsAreNotAnonymous(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1, RateLimits: &ratelimit.Options{Anonymous: ratelimit.Limit{Rate: 0.001, Burst: 3}}})
	v := newVisitor(t, e)
	v.signIn(e.Admin) // one anonymous request
	for i := range 6 {
		assert.Equal(t, http.StatusOK, v.get("/ui/").StatusCode, "page load %d", i)
	}
	v.cookie = nil
	codes := []int{}
	for range 4 {
		codes = append(codes, v.get("/ui/login").StatusCode)
	}
	assert.Contains(t, codes, http.StatusTooManyRequests, "anonymous requests are still limited: %v", codes)
}

// A finished build's page: its artifacts download as attachments (never
// rendered, even an HTML one), its callback deliveries are listed, and its
// follow-up form starts one follow-up however often it is posted.
func TestFinishedBuildPage(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1})
	p := e.Project("acme")
	id, token := running(t, e, p.ID, schema.BuildSpec{Prompt: "make a report", AutoCommit: true})
	ctx := context.Background()
	content := []byte("<script>alert(1)</script>")
	sum := sha256.Sum256(content)
	path := "reports/<b>r</b>.html"
	require.NoError(t, store.PutArtifact(ctx, e.DB.Pool, id, path, hex.EncodeToString(sum[:]), content, store.ArtifactCaps{}))
	newRunner(t, e, id, token).send("result", schema.BuildResult{Success: true, Output: "done", CommitSHA: "0123abcd",
		FilesChanged: []string{"report.md"}, DurationMS: 1500,
		Artifacts: []schema.Artifact{{Name: "r.html", Path: path, Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}}})
	e.Wait(id, schema.StatusCompleted)
	delivery := uuid.NewString()
	for _, a := range []store.CallbackAttempt{{DeliveryID: delivery, BuildID: id, StatusCode: 500, Outcome: "retry", Error: "HTTP 500"},
		{DeliveryID: delivery, BuildID: id, StatusCode: 200, Outcome: "delivered"}} {
		_, err := store.RecordCallbackAttempt(ctx, e.DB.Pool, a)
		require.NoError(t, err)
	}

	v := newVisitor(t, e)
	v.signIn(e.Admin)
	page := v.get("/ui/builds/" + id)
	require.Equal(t, http.StatusOK, page.StatusCode)
	body := html.UnescapeString(page.Body)
	assert.Contains(t, body, "0123abcd")
	assert.Contains(t, body, "report.md")
	assert.Regexp(t, `(?s)<table class="list" id="callbacks">.*retry.*500.*delivered.*200`, page.Body, "both attempts, oldest first")
	assert.NotContains(t, page.Body, `id="cancel-form"`, "no cancel for a finished build")
	link := regexp.MustCompile(`href="(/ui/builds/[^"]+/artifacts/[^"]+)" download`).FindStringSubmatch(page.Body)
	require.NotNil(t, link, "an artifact link")
	dl := v.get(html.UnescapeString(link[1]))
	require.Equal(t, http.StatusOK, dl.StatusCode, dl.Body)
	assert.Equal(t, string(content), dl.Body)
	assert.Equal(t, "application/octet-stream", dl.Header.Get("Content-Type"))
	assert.Contains(t, dl.Header.Get("Content-Disposition"), "attachment")
	assert.Contains(t, dl.Header.Get("Content-Security-Policy"), "sandbox")
	assert.Equal(t, "nosniff", dl.Header.Get("X-Content-Type-Options"))
	assert.Equal(t, "sha-256="+base64.StdEncoding.EncodeToString(sum[:]), dl.Header.Get("Digest"))

	form := url.Values{"csrf": {csrfOf(t, page.Body)}, "key": {regexp.MustCompile(`name="key" value="([^"]+)"`).FindStringSubmatch(page.Body)[1]},
		"prompt": {"Now add a chart."}, "auto_commit": {"on"}}
	first := v.do(http.MethodPost, "/ui/builds/"+id+"/followups", form)
	require.Equal(t, http.StatusSeeOther, first.StatusCode, first.Body)
	again := v.do(http.MethodPost, "/ui/builds/"+id+"/followups", form)
	require.Equal(t, http.StatusSeeOther, again.StatusCode, again.Body)
	assert.Equal(t, first.Header.Get("Location"), again.Header.Get("Location"), "the same form posted twice is one follow-up")
	fu := e.Get(strings.TrimPrefix(first.Header.Get("Location"), "/ui/builds/"))
	assert.Equal(t, id, fu.ParentID)
	assert.Equal(t, "Now add a chart.", fu.Spec.Prompt)
	assert.True(t, fu.Spec.AutoCommit)
	assert.False(t, fu.Spec.AutoPush)

	empty := v.do(http.MethodPost, "/ui/builds/"+id+"/followups", url.Values{"csrf": form["csrf"], "prompt": {""}})
	assert.Equal(t, http.StatusUnprocessableEntity, empty.StatusCode)
	assert.Contains(t, empty.Body, "prompt", "the page says what is wrong")
}
