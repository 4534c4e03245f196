package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/browser"
	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// consoleSignIn signs in to d's console through its form.
func consoleSignIn(t *testing.T, b *browser.Browser, base, token string) {
	t.Helper()
	_, err := b.Navigate(base + "/ui/")
	require.NoError(t, err)
	require.NoError(t, b.WaitVisible("#token"))
	require.NoError(t, b.Run(chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`form[action="/ui/login"] button[type=submit]`))))
	require.NoError(t, b.WaitText("header .who", "Signed in as", 15*time.Second))
}

// The console watches a real build on kubebox: the pinned Claude Code CLI
// in the project's pod, talking to the stand-in model, its events arriving
// in the browser while it runs; cancelled from the page, the build ends
// cancelled (its Job goes). A build whose agent writes the hostile payloads
// (text, tool input, a file name with an RTL override) shows them as text.
func TestConsoleWatchesARealBuild(t *testing.T) {
	f := newFollowupEnv(t)
	outer := t
	wd := f.p.Workdir
	b := browser.New(t, browser.WithTimeout(60*time.Second))
	base := f.d.url
	consoleSignIn(t, b, base, f.admin)

	t.Run("live, then cancelled from the page", func(t *testing.T) {
		f.t = t
		defer func() { f.t = outer }()
		f.freshModel()
		f.model.Enqueue(messagesapi.Script{Name: "slow", Turns: []messagesapi.Turn{
			{Text: "Looking at index.html first.", Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": wd + "/index.html"}}}},
			write(wd+"/index.html", "<h1>Hello, console</h1>\n"),
			{Text: "Thinking it over.", Stall: 3 * time.Minute},
		}})
		id := f.submit(f.d, f.p.ID, schema.BuildSpec{Prompt: "Change the heading.", AutoCommit: true})
		status, err := b.Navigate(base + "/ui/builds/" + id)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
		require.NoError(t, b.WaitText("#timeline", "Looking at index.html first.", 3*time.Minute), "the agent's text, live")
		require.NoError(t, b.WaitText("#timeline", "Hello, console", time.Minute), "the Write call's input, live")
		require.NoError(t, b.WaitText("#build-status", "running", 10*time.Second))
		assert.Equal(t, schema.StatusRunning, f.get(f.d, id).Status, "still running while its events show")
		calls, err := b.Text("#timeline")
		require.NoError(t, err)
		assert.Contains(t, calls, "Read")
		assert.Contains(t, calls, "Write")
		_, err = b.Screenshot("real-build-running")
		require.NoError(t, err)

		require.NoError(t, b.Run(chromedp.SendKeys(chromedp.CSS("#cancel-reason"), "stopped from the console"),
			chromedp.Click(chromedp.CSS("#cancel-button"))))
		require.NoError(t, b.WaitText("#notice", "Cancel requested", 20*time.Second))
		got := f.waitStatus(f.d, id, 2*time.Minute, schema.StatusCancelled, schema.StatusCompleted, schema.StatusFailed)
		assert.Equal(t, schema.StatusCancelled, got.Status)
		assert.Contains(t, got.Error, "stopped from the console")
		require.NoError(t, b.WaitText("#build-status", "cancelled", time.Minute))
		_, err = b.Screenshot("real-build-cancelled")
		require.NoError(t, err)
	})

	t.Run("hostile output", func(t *testing.T) {
		f.t = t
		defer func() { f.t = outer }()
		f.freshModel()
		payloads := `<script>alert('s')</script> <img src=x onerror="alert('i')"> <a href="javascript:alert('l')">go</a>`
		rtl := "invoice\u202Efdp.exe"
		f.model.Enqueue(messagesapi.Script{Name: "hostile", Turns: []messagesapi.Turn{
			{Text: "Here: " + payloads, Tools: []messagesapi.ToolUse{{Name: "Write",
				Input: map[string]any{"file_path": wd + "/" + rtl, "content": payloads + "\n"}}}},
			write(wd+"/<img src=x onerror=alert(1)>.md", "x\n"),
			say("Done " + payloads),
		}})
		id := f.submit(f.d, f.p.ID, schema.BuildSpec{Prompt: "Fix " + payloads, AutoCommit: true})
		got := f.wait(id)
		completed(t, got)
		status, err := b.Navigate(base + "/ui/builds/" + id)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
		require.NoError(t, b.WaitText("#stream-state", "The build ended", time.Minute))
		require.NoError(t, b.Run(chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('details').forEach(d => d.open = true)`)))
		time.Sleep(300 * time.Millisecond)
		assert.Empty(t, b.Dialogs(), "no script ran")
		var n int
		require.NoError(t, b.Eval(`document.querySelectorAll('script').length`, &n))
		assert.Equal(t, 1, n, "the console's own script only")
		require.NoError(t, b.Eval(`document.querySelectorAll('img, iframe, a[href^="javascript:"]').length`, &n))
		assert.Zero(t, n, "no element from the payloads")
		text, err := b.Text("main")
		require.NoError(t, err)
		assert.Contains(t, text, `<img src=x onerror="alert('i')">`)
		assert.Contains(t, text, "invoice[U+202E]fdp.exe", "the file name's RTL override shown")
		assert.NotContains(t, text, "\u202E")
		files, err := b.Text("#files")
		require.NoError(t, err)
		assert.Contains(t, files, "<img src=x onerror=alert(1)>.md", fmt.Sprintf("files changed: %v", got.Result.FilesChanged))
		_, err = b.Screenshot("real-build-hostile")
		require.NoError(t, err)
	})
}
