package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/browser"
)

// running makes a build of project running with a runner token, as the
// launcher leaves it, and returns its id and the token.
func running(t *testing.T, e *apptest.Env, projectID string, spec schema.BuildSpec) (string, string) {
	t.Helper()
	ctx := context.Background()
	id := e.Pending(projectID, spec)
	token, hash := auth.NewToken()
	require.NoError(t, store.SetRunnerTokenHash(ctx, e.DB.Pool, id, hash))
	_, err := store.TransitionBuild(ctx, e.DB.Pool, id, store.Transition{To: schema.StatusRunning, JobName: "kiln-" + id[:8]})
	require.NoError(t, err)
	return id, token
}

// runner posts to a build's runner routes as its jobrunner does.
type runner struct {
	t     *testing.T
	http  *http.Client
	url   string
	token string
	batch int64
}

func newRunner(t *testing.T, e *apptest.Env, id, token string) *runner {
	return &runner{t: t, http: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}, url: e.Server.URL + schema.RunnerAPIPrefix + id, token: token}
}

func (r *runner) send(what string, body any) {
	r.t.Helper()
	b, err := json.Marshal(body)
	require.NoError(r.t, err)
	req, err := http.NewRequest(http.MethodPost, r.url+"/"+what, bytes.NewReader(b))
	require.NoError(r.t, err)
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := r.http.Do(req)
	require.NoError(r.t, err)
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	require.Equal(r.t, http.StatusOK, res.StatusCode, "%s: %s", what, out)
}

func (r *runner) events(ps ...schema.Payload) {
	r.t.Helper()
	r.batch++
	b := schema.EventBatch{Batch: r.batch}
	for _, p := range ps {
		in, err := schema.NewEventInput(time.Now(), p)
		require.NoError(r.t, err)
		b.Events = append(b.Events, in)
	}
	r.send("events", b)
}

// signIn signs in through the sign-in form, as a person does.
func signIn(t *testing.T, b *browser.Browser, base, token string) {
	t.Helper()
	status, err := b.Navigate(base + "/ui/")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status, "the sign-in page, after the redirect")
	require.NoError(t, b.WaitVisible("#token"))
	require.NoError(t, b.Run(chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`form[action="/ui/login"] button[type=submit]`))))
	require.NoError(t, b.WaitVisible("h1"))
	require.NoError(t, b.WaitText("header .who", "Signed in as", 10*time.Second))
}

func signOut(t *testing.T, b *browser.Browser) {
	t.Helper()
	require.NoError(t, b.Run(chromedp.Click(chromedp.CSS(`form[action="/ui/logout"] button`))))
	require.NoError(t, b.WaitVisible("#token"))
}

func evalInt(t *testing.T, b *browser.Browser, js string) int {
	t.Helper()
	var n int
	require.NoError(t, b.Eval(js, &n))
	return n
}

func shot(t *testing.T, b *browser.Browser, name string) {
	t.Helper()
	_, err := b.Screenshot(name)
	require.NoError(t, err)
}

// The console in Debian's chromium, headless: sign-in, a build's live
// timeline (resuming after a cut connection), cancel from the page,
// hostile content left inert, scoping, and the River UI.
func TestConsoleInABrowser(t *testing.T) {
	e := apptest.New(t, app.Options{Workers: 1, EventHeartbeat: time.Second})
	acme, other := e.Project("acme-web"), e.Project("other-team")
	b := browser.New(t)
	base := e.Server.URL

	t.Run("sign-in", func(t *testing.T) {
		signIn(t, b, base, e.Admin)
		require.NoError(t, b.WaitVisible("#projects"))
		text, err := b.Text("#projects")
		require.NoError(t, err)
		assert.Contains(t, text, "acme-web")
		cookies, err := b.Cookies()
		require.NoError(t, err)
		i := slices.IndexFunc(cookies, func(c *network.Cookie) bool { return c.Name == "kiln_session" })
		require.GreaterOrEqual(t, i, 0, "a session cookie")
		assert.True(t, cookies[i].HTTPOnly)
		assert.Equal(t, "Strict", cookies[i].SameSite.String())
		var jar string
		require.NoError(t, b.Eval("document.cookie", &jar))
		assert.NotContains(t, jar, "kiln_session", "the session is out of scripts' reach")
		var html string
		require.NoError(t, b.Eval("document.documentElement.outerHTML", &html))
		assert.NotContains(t, html, e.Admin, "no token in the page")
		shot(t, b, "projects")

		// Keyboard: the first Tab reaches the skip link, drawn with a
		// visible focus ring; Enter on it moves focus to the content.
		require.NoError(t, b.Run(chromedp.KeyEvent("\t")))
		var focus struct{ Class, Outline, Width string }
		require.NoError(t, b.Eval(`(() => { const a = document.activeElement, s = getComputedStyle(a);
			return {Class: a.className, Outline: s.outlineStyle, Width: s.outlineWidth} })()`, &focus))
		assert.Equal(t, "skip", focus.Class, "the skip link comes first")
		assert.NotEqual(t, "none", focus.Outline, "focus is visible")
		assert.Equal(t, "3px", focus.Width)
		require.NoError(t, b.Run(chromedp.KeyEvent("\r")))
		require.NoError(t, b.Run(chromedp.KeyEvent("\t")))
		var inMain bool
		require.NoError(t, b.Eval(`document.getElementById('main').contains(document.activeElement)`, &inMain))
		assert.True(t, inMain, "after the skip link, Tab moves within the content")
	})

	t.Run("live timeline, resumed after a cut", func(t *testing.T) {
		id, token := running(t, e, acme.ID, schema.BuildSpec{Prompt: "Change the heading", AutoCommit: true})
		r := newRunner(t, e, id, token)
		r.events(schema.AgentTextPayload{Text: "Reading the project first."})
		_, err := b.Navigate(base + "/ui/builds/" + id)
		require.NoError(t, err)
		require.NoError(t, b.WaitText("#stream-state", "Live", 10*time.Second))
		require.NoError(t, b.WaitText("#timeline", "Reading the project first.", 10*time.Second))

		r.events(
			schema.ToolCallPayload{ID: "toolu_1", Name: "Read", Input: `{"file_path":"src/app.tsx"}`},
			schema.ToolResultPayload{ToolUseID: "toolu_1", Summary: "export const App = () => <h1>Hello</h1>", Size: 42},
			schema.PermissionDeniedPayload{ToolUseID: "toolu_2", Tool: "Bash", Summary: "rm -rf /", Reason: "not in the allowed tools"},
			schema.AgentRetryPayload{Attempt: 1, MaxRetries: 10, DelayMS: 600, Status: 529, Error: "overloaded"},
		)
		require.NoError(t, b.WaitText("#timeline", "overloaded", 10*time.Second), "events appear while the build runs")
		call, err := b.Text(".ev-tool_call")
		require.NoError(t, err)
		assert.Contains(t, call, "Read")
		assert.Contains(t, call, `"file_path": "src/app.tsx"`, "the tool's input, pretty")
		assert.Equal(t, 0, evalInt(t, b, `document.querySelectorAll('.ev-tool_result details[open]').length`), "tool results folded")
		result, err := b.Text(".ev-tool_result summary")
		require.NoError(t, err)
		assert.Contains(t, result, "Read · 42 bytes", "a result names its call")
		assert.Equal(t, 1, evalInt(t, b, `document.querySelectorAll('.ev-permission_denied .mark.denied').length`))
		assert.Equal(t, 1, evalInt(t, b, `document.querySelectorAll('.ev-agent_retry .mark.retry').length`))
		var counted bool
		require.NoError(t, b.Eval(`document.getElementById('stream-state').textContent ===
			'Live · ' + document.querySelectorAll('#timeline > li').length + ' events'`, &counted))
		assert.True(t, counted, "the stream's state counts the events shown")

		e.Server.CloseClientConnections() // the stream is cut; EventSource comes back with Last-Event-ID
		r.http.CloseIdleConnections()     // (the runner's connection was cut too)
		r.events(schema.AgentTextPayload{Text: "Written while the stream was down."},
			schema.GitPayload{FilesChanged: []string{"src/app.tsx"}, Committed: true, CommitSHA: "0123456789abcdef0123"},
			schema.UsagePayload{Turns: 3, InputTokens: 1200, OutputTokens: 340, CostUSD: 0.0123})
		require.NoError(t, b.WaitText("#timeline", "1200 in / 340 out", 20*time.Second), "the timeline resumes")
		var seqs []string
		require.NoError(t, b.Eval(`[...document.querySelectorAll('#timeline > li')].map(li => li.dataset.seq)`, &seqs))
		seen := map[string]bool{}
		for _, s := range seqs {
			assert.False(t, seen[s], "event %s shown twice", s)
			seen[s] = true
		}
		evs, err := store.ListEvents(context.Background(), e.DB.Pool, id, 0, 100)
		require.NoError(t, err)
		assert.Len(t, seqs, len(evs), "every stored event, once")
		git, err := b.Text(".ev-git")
		require.NoError(t, err)
		assert.Contains(t, git, "committed 0123456789ab")
		shot(t, b, "build-live")

		for _, width := range []int{390, 1280} {
			require.NoError(t, b.SetViewport(width, 900))
			var overflow int
			require.NoError(t, b.Eval(`document.documentElement.scrollWidth - document.documentElement.clientWidth`, &overflow))
			assert.LessOrEqual(t, overflow, 0, "no sideways scrolling at %d px", width)
			shot(t, b, fmt.Sprintf("build-live-%dpx", width))
		}

		// Cancel from the page: the build ends cancelled, the page says so.
		require.NoError(t, b.Run(chromedp.SendKeys(chromedp.CSS("#cancel-reason"), "wrong heading"),
			chromedp.Click(chromedp.CSS("#cancel-button"))))
		require.NoError(t, b.WaitText("#notice", "Cancel requested", 10*time.Second))
		got := e.Wait(id, schema.StatusCancelled)
		assert.Contains(t, got.Error, "wrong heading")
		require.NoError(t, b.WaitText("#build-status", "cancelled", 15*time.Second))
		require.NoError(t, b.WaitText("#stream-state", "The build ended cancelled", 15*time.Second))
		shot(t, b, "build-cancelled")
	})

	t.Run("a pending build starts while watched", func(t *testing.T) {
		id := e.Pending(acme.ID, schema.BuildSpec{Prompt: "wait for it"})
		_, err := b.Navigate(base + "/ui/builds/" + id)
		require.NoError(t, err)
		require.NoError(t, b.WaitText("#waiting", "in the project's queue", 10*time.Second))
		require.NoError(t, b.WaitText("#stream-state", "Live", 10*time.Second))
		_, err = store.TransitionBuild(context.Background(), e.DB.Pool, id, store.Transition{To: schema.StatusRunning, JobName: "kiln-x"})
		require.NoError(t, err)
		require.NoError(t, b.WaitText("#build-status", "running", 10*time.Second))
		assert.Equal(t, 0, evalInt(t, b, `document.querySelectorAll('#waiting').length`), "no longer waiting")
		started, err := b.Text("#started")
		require.NoError(t, err)
		assert.Regexp(t, `^\d\d:\d\d:\d\d$`, started, "when it started")
	})

	t.Run("event to browser latency", func(t *testing.T) {
		id, token := running(t, e, acme.ID, schema.BuildSpec{Prompt: "latency"})
		r := newRunner(t, e, id, token)
		_, err := b.Navigate(base + "/ui/builds/" + id)
		require.NoError(t, err)
		require.NoError(t, b.WaitText("#stream-state", "Live", 10*time.Second))
		// The page stamps each line as it is added (wall clock, as the test's).
		require.NoError(t, b.Eval(`(() => { window.__seen = {};
			new MutationObserver(ms => { const now = performance.timeOrigin + performance.now();
				for (const m of ms) for (const n of m.addedNodes) { const p = n.querySelector && n.querySelector('p.text');
					if (p) window.__seen[p.textContent] = now; } })
			.observe(document.getElementById('timeline'), {childList: true}); return true })()`, nil))
		const n = 200
		posted := map[string]time.Time{}
		for i := range n {
			text := fmt.Sprintf("line %03d", i)
			posted[text] = time.Now()
			r.events(schema.AgentTextPayload{Text: text})
		}
		require.NoError(t, b.WaitText("#timeline", fmt.Sprintf("line %03d", n-1), 30*time.Second))
		var seen map[string]float64
		require.NoError(t, b.Eval(`window.__seen`, &seen))
		var lags []time.Duration
		for text, at := range posted {
			ms, ok := seen[text]
			if assert.True(t, ok, "%s reached the page", text) {
				lags = append(lags, time.UnixMicro(int64(ms*1000)).Sub(at))
			}
		}
		slices.Sort(lags)
		require.Len(t, lags, n)
		p := func(q float64) time.Duration { return lags[int(q*float64(len(lags)-1))].Round(100 * time.Microsecond) }
		t.Logf("runner event POST → line in the browser over %d events: p50 %v, p99 %v, max %v", n, p(0.5), p(0.99), lags[n-1])
	})

	t.Run("hostile content is inert", func(t *testing.T) {
		payloads := "<script>alert('script')</script> <img src=x onerror=\"alert('img');window.__pwned=1\"> " +
			"<a href=\"javascript:alert('link')\">click me</a> invoice\u202Efdp.exe"
		id, token := running(t, e, acme.ID, schema.BuildSpec{Prompt: "Fix it " + payloads, AutoCommit: true})
		r := newRunner(t, e, id, token)
		r.events(
			schema.AgentTextPayload{Text: "Agent says " + payloads},
			schema.ToolCallPayload{ID: "toolu_x", Name: "Write<img src=x onerror=alert('tool')>",
				Input: `{"file_path":"<svg onload=alert('svg')>","content":"` + strings.ReplaceAll(payloads, `"`, `\"`) + `"}`},
			schema.ToolResultPayload{ToolUseID: "toolu_x", Summary: "<iframe src=javascript:alert('frame')></iframe>", Size: 60},
			schema.GitPayload{FilesChanged: []string{"invoice\u202Efdp.exe", "<img src=x onerror=alert('file')>.md"}, Committed: true, CommitSHA: "abc"},
			schema.LogPayload{Level: "error", Message: "<b onmouseover=alert('log')>bold</b>"},
		)
		r.send("result", schema.BuildResult{Success: false, Output: "Output " + payloads, Error: "Error " + payloads,
			CommitSHA: "<script>alert('sha')</script>", FilesChanged: []string{"invoice\u202Efdp.exe", "<script>x</script>.js"},
			DurationMS: 1200, Reason: schema.ReasonAgentError})
		e.Wait(id)

		_, err := b.Navigate(base + "/ui/builds/" + id)
		require.NoError(t, err)
		require.NoError(t, b.WaitText("#stream-state", "The build ended", 15*time.Second))
		require.NoError(t, b.Run(chromedp.Evaluate[chromedp.Void](
			`document.querySelectorAll('details').forEach(d => d.open = true)`)))
		time.Sleep(300 * time.Millisecond) // a handler, if any got in, would run now
		assert.Empty(t, b.Dialogs(), "no script ran")
		assert.Equal(t, 1, evalInt(t, b, `document.querySelectorAll('script').length`), "only the console's own script")
		assert.Equal(t, 0, evalInt(t, b, `document.querySelectorAll('img, svg:not(figure svg), iframe, b, a[href^="javascript:"]').length`),
			"no element from the payloads")
		assert.Equal(t, 0, evalInt(t, b, `[...document.querySelectorAll('*')].filter(el =>
			[...el.attributes].some(a => a.name.startsWith('on'))).length`), "no event handler attribute anywhere")
		var pwned bool
		require.NoError(t, b.Eval(`window.__pwned === 1`, &pwned))
		assert.False(t, pwned)
		body, err := b.Text("main")
		require.NoError(t, err)
		for _, literal := range []string{"<script>alert('script')</script>", `<a href="javascript:alert('link')">click me</a>`,
			"invoice[U+202E]fdp.exe", "<iframe src=javascript:alert('frame')></iframe>", "<b onmouseover=alert('log')>bold</b>",
			"Write<img src=x onerror=alert('tool')>"} {
			assert.Contains(t, body, literal, "shown as text")
		}
		assert.NotContains(t, body, "\u202E", "no live RTL override")
		assert.Empty(t, b.Exceptions(), "no script error")
		shot(t, b, "build-hostile")
	})

	t.Run("overview", func(t *testing.T) {
		status, err := b.Navigate(base + "/ui/overview")
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, status)
		assert.Equal(t, 2, evalInt(t, b, `document.querySelectorAll('figure.chart svg').length`))
		assert.Positive(t, evalInt(t, b, `document.querySelectorAll('figure.chart rect.bar').length`), "bars drawn")
		shot(t, b, "overview")
		status, err = b.Navigate(base + "/ui/projects/" + acme.ID)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, status)
		var when struct{ Text, Title, ISO string }
		require.NoError(t, b.Eval(`(() => { const t = document.querySelector('#builds time.rel');
			return {Text: t.textContent, Title: t.title, ISO: t.getAttribute('datetime')} })()`, &when))
		assert.Regexp(t, `^(just now|\d+ (s|min|h|d) ago)$`, when.Text, "relative")
		assert.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$`, when.Title, "absolute on hover")
		shot(t, b, "project")
	})

	t.Run("page weights", func(t *testing.T) {
		// What each page costs, as the browser measured it: the document,
		// its assets (the CSS and the script, cached after the first page),
		// and the time to its load event.
		builds, _, err := e.App.Intake.ListBuilds(context.Background(), store.ListBuildsParams{ProjectID: acme.ID, Limit: 1})
		require.NoError(t, err)
		require.NotEmpty(t, builds)
		for _, page := range []string{"/ui/", "/ui/projects/" + acme.ID, "/ui/builds/" + builds[0].ID, "/ui/overview"} {
			_, err := b.Navigate(base + page)
			require.NoError(t, err)
			var m struct {
				Doc, Assets, Decoded float64
				Load                 float64
			}
			require.NoError(t, b.Eval(`(() => { const n = performance.getEntriesByType('navigation')[0];
				const rs = performance.getEntriesByType('resource');
				return {Doc: n.encodedBodySize, Assets: rs.reduce((s, r) => s + r.encodedBodySize, 0),
					Decoded: n.decodedBodySize, Load: n.loadEventEnd - n.startTime} })()`, &m))
			assert.Positive(t, m.Doc, page)
			t.Logf("%-60s document %6.1f KiB, assets %5.1f KiB, load %5.1f ms", page, m.Doc/1024, m.Assets/1024, m.Load)
		}
	})

	t.Run("River UI as admin", func(t *testing.T) {
		_, err := e.App.Inserter.Insert(context.Background(), queue.CallbackArgs{BuildID: "console-test", DeliveryID: "d1"},
			&river.InsertOpts{ScheduledAt: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		status, err := b.Navigate(base + "/riverui/jobs?state=scheduled")
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, status)
		require.NoError(t, b.WaitText("body", "kiln_callback", 20*time.Second), "the job list, from the UI's API with the session")
		shot(t, b, "riverui")
	})

	t.Run("a project token", func(t *testing.T) {
		theirs := e.Pending(other.ID, schema.BuildSpec{Prompt: "their secret plan"})
		_, err := b.Navigate(base + "/ui/")
		require.NoError(t, err)
		signOut(t, b)
		signIn(t, b, base, e.Token("acme-bot", acme.ID))
		text, err := b.Text("#projects")
		require.NoError(t, err)
		assert.Contains(t, text, "acme-web")
		assert.NotContains(t, text, "other-team")
		status, err := b.Navigate(base + "/ui/builds/" + theirs)
		require.NoError(t, err)
		assert.Equal(t, http.StatusNotFound, status)
		h1, err := b.Text("h1")
		require.NoError(t, err)
		assert.Contains(t, h1, "404")
		page, err := b.Text("body")
		require.NoError(t, err)
		assert.NotContains(t, page, "their secret plan")
		shot(t, b, "not-found")
		status, err = b.Navigate(base + "/riverui/")
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, status, "the River UI refuses a project token")
	})
}
