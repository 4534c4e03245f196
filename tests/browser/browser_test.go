package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The pages the tests load. Each is what a console test would assert
// against: script that should or should not run, a cookie the page must not
// read, a status, late text.
const (
	inlineAlert  = `<!doctype html><title>t</title><p>before</p><script>alert("x")</script>`
	inlineOnload = `<!doctype html><title>t</title><img src="x" onerror="alert(1)">`
	chatty       = `<!doctype html><title>t</title><script>console.log("hello", 42); console.error({a: 1}); throw new Error("boom")</script>`
	late         = `<!doctype html><title>t</title><p id="status">queued</p>` +
		`<script>setTimeout(() => { document.getElementById("status").textContent = "running" }, 150)</script>`
	askConfirm = `<!doctype html><title>t</title><p id="answer"></p>` +
		`<script>document.getElementById("answer").textContent = String(confirm("sure?"))</script>`
	tall = `<!doctype html><title>t</title><body style="margin:0"><div style="height:2000px;background:#c33">tall</div></body>`
)

// server serves the test pages on 127.0.0.1 only. Paths it does not know
// get a 404, which is also what src="x" above loads.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	page := func(body, csp string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if csp != "" {
				w.Header().Set("Content-Security-Policy", csp)
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(body))
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /alert", page(inlineAlert, ""))
	mux.Handle("GET /alert-csp", page(inlineAlert, "script-src 'self'"))
	mux.Handle("GET /onerror", page(inlineOnload, ""))
	mux.Handle("GET /chatty", page(chatty, ""))
	mux.Handle("GET /late", page(late, ""))
	mux.Handle("GET /confirm", page(askConfirm, ""))
	mux.Handle("GET /tall", page(tall, ""))
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "kiln_session", Value: "secret", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.SetCookie(w, &http.Cookie{Name: "theme", Value: "dark", Path: "/"})
		page(`<!doctype html><title>t</title><p>signed in</p>`, "")(w, r)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

type bundle struct {
	srv *httptest.Server
	b   *Browser
}

func setup(t *testing.T, opts ...Option) bundle {
	t.Helper()
	t.Parallel()
	return bundle{srv: server(t), b: New(t, opts...)}
}

// open navigates to path on the test server and requires a 200.
func (x bundle) open(t *testing.T, path string) {
	t.Helper()
	status, err := x.b.Navigate(x.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", path, status)
	}
}

func TestInlineScriptOpensDialog(t *testing.T) {
	x := setup(t)
	x.open(t, "/alert")
	want := []Dialog{{Type: page.DialogTypeAlert, Message: "x", URL: x.srv.URL + "/alert"}}
	if diff := cmp.Diff(want, x.b.Dialogs()); diff != "" {
		t.Errorf("Dialogs() (-want +got):\n%s", diff)
	}
	// The dialog was answered: the page is not stuck behind it.
	var title string
	if err := x.b.Eval("document.title", &title); err != nil || title != "t" {
		t.Errorf("document.title = %q, %v; want %q", title, err, "t")
	}
}

func TestCSPBlocksInlineScriptAndSaysSo(t *testing.T) {
	x := setup(t)
	x.open(t, "/alert-csp")
	if d := x.b.Dialogs(); len(d) != 0 {
		t.Errorf("Dialogs() = %v under script-src 'self'; want none", d)
	}
	// Chromium reports the violation as a log entry from source "security",
	// not as an exception or a console call.
	entries := x.b.LogEntries()
	if !slices.ContainsFunc(entries, func(e string) bool {
		return strings.HasPrefix(e, "error security: ") &&
			strings.Contains(e, "Content Security Policy") && strings.Contains(e, "script-src 'self'")
	}) {
		t.Errorf("LogEntries() = %q; want an error from source security naming script-src 'self'", entries)
	}
	if e, c := x.b.Exceptions(), x.b.Console(); len(e)+len(c) != 0 {
		t.Errorf("Exceptions() = %q, Console() = %q; want neither to report the violation", e, c)
	}
}

func TestInlineEventHandlerOpensDialog(t *testing.T) {
	x := setup(t)
	x.open(t, "/onerror")
	want := []Dialog{{Type: page.DialogTypeAlert, Message: "1", URL: x.srv.URL + "/onerror"}}
	if diff := cmp.Diff(want, x.b.Dialogs()); diff != "" {
		t.Errorf("Dialogs() (-want +got):\n%s", diff)
	}
	// The image's 404 is in the log too, from source network.
	if entries := x.b.LogEntries(); !slices.ContainsFunc(entries, func(e string) bool {
		return strings.HasPrefix(e, "error network: ") && strings.Contains(e, "404")
	}) {
		t.Errorf("LogEntries() = %q; want the image's 404", entries)
	}
}

func TestConsoleAndExceptionsAreRecorded(t *testing.T) {
	x := setup(t)
	x.open(t, "/chatty")
	if diff := cmp.Diff([]string{"log: hello 42", "error: Object"}, x.b.Console()); diff != "" {
		t.Errorf("Console() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Uncaught Error: boom"}, x.b.Exceptions()); diff != "" {
		t.Errorf("Exceptions() (-want +got):\n%s", diff)
	}
}

func TestNavigateReturnsTheDocumentStatus(t *testing.T) {
	x := setup(t)
	status, err := x.b.Navigate(x.srv.URL + "/no-such-page")
	if err != nil || status != http.StatusNotFound {
		t.Errorf("Navigate(/no-such-page) = %d, %v; want 404", status, err)
	}
	// A second navigation reports its own document, not the first one's.
	x.open(t, "/alert")
}

func TestScreenshotWritesAFullPagePNG(t *testing.T) {
	x := setup(t)
	x.open(t, "/tall")
	path, err := x.b.Screenshot("tall page")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := artifactsDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "TestScreenshotWritesAFullPagePNG-tall_page.png"); path != want {
		t.Errorf("Screenshot wrote %s; want %s", path, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", path, err)
	}
	// Full page: the 2000px-tall div, not just the 900px viewport.
	if size := img.Bounds().Size(); size.X != 1280 || size.Y < 2000 {
		t.Errorf("screenshot is %v; want 1280 wide and at least 2000 tall", size)
	}
}

func TestHttpOnlyCookieIsHiddenFromScript(t *testing.T) {
	x := setup(t)
	x.open(t, "/login")
	cookies, err := x.b.Cookies()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{} // name → HttpOnly
	for _, c := range cookies {
		got[c.Name] = c.HTTPOnly
	}
	if diff := cmp.Diff(map[string]bool{"kiln_session": true, "theme": false}, got); diff != "" {
		t.Errorf("Cookies() name → HttpOnly (-want +got):\n%s", diff)
	}
	var jar string
	if err := x.b.Eval("document.cookie", &jar); err != nil {
		t.Fatal(err)
	}
	if jar != "theme=dark" {
		t.Errorf("document.cookie = %q; want only theme=dark", jar)
	}
}

func TestWaitTextAndText(t *testing.T) {
	x := setup(t)
	x.open(t, "/late")
	if err := x.b.WaitText("#status", "running", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if text, err := x.b.Text("#status"); err != nil || text != "running" {
		t.Errorf("Text(#status) = %q, %v; want running", text, err)
	}
	err := x.b.WaitText("#status", "succeeded", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `its text was "running"`) {
		t.Errorf("WaitText for text that never comes = %v; want a timeout naming the last text", err)
	}
	if err := x.b.WaitText("#nothing", "x", 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no element matched") {
		t.Errorf("WaitText on a missing element = %v; want a timeout saying no element matched", err)
	}
	if err := x.b.WaitVisible("#status"); err != nil {
		t.Error(err)
	}
}

func TestDialogAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"dismissed by default", nil, "false"},
		{"accepted with WithAcceptDialogs", []Option{WithAcceptDialogs()}, "true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := setup(t, tc.opts...)
			x.open(t, "/confirm")
			if text, err := x.b.Text("#answer"); err != nil || text != tc.want {
				t.Errorf("confirm() returned %q, %v; want %s", text, err, tc.want)
			}
			if d := x.b.Dialogs(); len(d) != 1 || d[0].Type != page.DialogTypeConfirm || d[0].Message != "sure?" {
				t.Errorf("Dialogs() = %v; want the one confirm", d)
			}
		})
	}
}

func TestSetViewportAndWindowSize(t *testing.T) {
	x := setup(t, WithWindowSize(1024, 700))
	x.open(t, "/tall")
	var width int
	if err := x.b.Eval("window.innerWidth", &width); err != nil || width != 1024 {
		t.Errorf("innerWidth = %d, %v; want 1024 from WithWindowSize", width, err)
	}
	if err := x.b.SetViewport(390, 844); err != nil {
		t.Fatal(err)
	}
	var size [2]int
	if err := x.b.Eval("[window.innerWidth, window.innerHeight]", &size); err != nil || size != [2]int{390, 844} {
		t.Errorf("viewport = %v, %v; want [390 844]", size, err)
	}
}

func TestRunAndGet(t *testing.T) {
	x := setup(t, WithTimeout(2*time.Second))
	if err := x.b.Run(chromedp.Navigate(x.srv.URL+"/alert"), chromedp.WaitReady(chromedp.CSS("p"))); err != nil {
		t.Fatal(err)
	}
	if title, err := Get(x.b, chromedp.Title()); err != nil || title != "t" {
		t.Errorf("Get(Title) = %q, %v; want t", title, err)
	}
	// The per-call timeout ends a call that would wait for ever, and the
	// tab still works after it.
	err := x.b.Run(chromedp.WaitVisible(chromedp.CSS("#never")))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for a missing element = %v; want a deadline error", err)
	}
	if err := x.b.Eval("1 + 1", nil); err != nil {
		t.Errorf("Eval after a timed-out call: %v", err)
	}
	if err := x.b.Eval("undefined", new(int)); !errors.Is(err, chromedp.ErrJSUndefined) {
		t.Errorf("Eval(undefined) into an int = %v; want ErrJSUndefined", err)
	}
	var exc *chromedp.ExceptionError
	if err := x.b.Eval(`throw new Error("from Eval")`, nil); !errors.As(err, &exc) {
		t.Errorf("Eval of a throw = %v; want a *chromedp.ExceptionError", err)
	}
	if e := x.b.Exceptions(); len(e) != 0 {
		t.Errorf("Exceptions() = %q; want Eval's own exception left out", e)
	}
}

// TestCleanupStopsChromium checks the cleanup New registers: while the test
// runs, the survivor check finds the browser's processes (so it looks at
// something real); after it, it finds none and the main process is gone.
func TestCleanupStopsChromium(t *testing.T) {
	t.Parallel()
	var (
		b   *Browser
		pid int
	)
	t.Run("use", func(t *testing.T) {
		b = New(t)
		pid = chromedp.FromContext(b.Context()).Browser.Process().Pid
		// The main process and its helpers (zygotes, renderers, the
		// network service, the crash handler).
		if running := b.survivors(0); !slices.Contains(running, pid) || len(running) < 3 {
			t.Fatalf("the browser's processes are %v; want the main process %d and its helpers", running, pid)
		}
	})
	if left := b.survivors(0); len(left) > 0 {
		t.Errorf("processes %v survived the cleanup", left)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the main process %d is still there after cleanup (kill 0: %v)", pid, err)
	}
	if b.Context().Err() == nil {
		t.Error("the tab's context is still live after cleanup")
	}
}

func TestLocate(t *testing.T) {
	t.Parallel()
	on := func(names ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			if slices.Contains(names, name) {
				return "/bin/" + name, nil
			}
			return "", errors.New("not found")
		}
	}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name      string
		env       func(string) string
		look      func(string) (string, error)
		want      string
		wantErr   bool
		skippable bool // the error is errNoChromium
	}{
		{"chromium first", env(), on("chromium", "chromium-browser"), "/bin/chromium", false, false},
		{"chromium-browser", env(), on("chromium-browser"), "/bin/chromium-browser", false, false},
		{"none", env(), on(), "", true, true},
		{"KILN_CHROMIUM wins", env("KILN_CHROMIUM", "chrome"), on("chromium", "chrome"), "/bin/chrome", false, false},
		{"KILN_CHROMIUM missing is not skippable", env("KILN_CHROMIUM", "chrome"), on("chromium"), "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := locate(tc.env, tc.look)
			if got != tc.want || (err != nil) != tc.wantErr || errors.Is(err, errNoChromium) != tc.skippable {
				t.Errorf("locate = %q, %v; want %q, error %v, skippable %v", got, err, tc.want, tc.wantErr, tc.skippable)
			}
		})
	}
}

// skipOrFail is a testing.TB that records Skipf and Fatalf instead of
// ending the real test, to see which New chooses.
type skipOrFail struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *skipOrFail) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *skipOrFail) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestNewWithoutChromium checks that a machine with no Chromium skips the
// browser tests, except on CI, where they fail and say how to get one.
// (Not parallel: it empties PATH.)
func TestNewWithoutChromium(t *testing.T) {
	for _, tc := range []struct {
		ci, kilnChromium string
		wantSkip         bool
		wantMsg          string
	}{
		{ci: "", wantSkip: true, wantMsg: "make chromium"},
		{ci: "true", wantSkip: false, wantMsg: "make chromium"},
		{ci: "", kilnChromium: "/nonexistent/chromium", wantSkip: false, wantMsg: "KILN_CHROMIUM=/nonexistent/chromium"},
	} {
		t.Run("CI="+tc.ci+",KILN_CHROMIUM="+tc.kilnChromium, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tc.ci)
			t.Setenv(chromiumEnv, tc.kilnChromium)
			f := &skipOrFail{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				New(f)
				t.Error("New returned a Browser with no Chromium on PATH")
			}()
			<-done
			if f.skipped != tc.wantSkip || f.failed == tc.wantSkip || !strings.Contains(f.msg, tc.wantMsg) {
				t.Errorf("New: skipped %v, failed %v, %q; want skipped %v and a message naming %q", f.skipped, f.failed, f.msg, tc.wantSkip, tc.wantMsg)
			}
		})
	}
}

func TestModuleRoot(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "go.mod"), "// Kiln\nmodule github.com/kilnbuild/kiln\n\ngo 1.26.0\n")
	write(filepath.Join(root, "tests", "kubebox", "go.mod"), "module github.com/kilnbuild/kiln/tests/kubebox\n")
	pkg := filepath.Join(root, "tests", "kubebox", "cmd", "x")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := moduleRoot(pkg); err != nil || got != root {
		t.Errorf("moduleRoot(%s) = %q, %v; want %s, past the nested module", pkg, got, err, root)
	}
	if got, err := moduleRoot(t.TempDir()); err == nil {
		t.Errorf("moduleRoot outside the repository = %q; want an error", got)
	}
}

func TestOnCI(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"": false, "false": false, "0": false, "true": true, "1": true, "yes": true} {
		if got := onCI(func(string) string { return v }); got != want {
			t.Errorf("onCI with CI=%q = %v; want %v", v, got, want)
		}
	}
}

func TestFileName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ test, name, want string }{
		{"TestLogin", "after", "TestLogin-after.png"},
		{"TestLogin/bad password", "form.png", "TestLogin_bad_password-form.png"},
		{"TestX/../../etc", "a/b", "TestX_.._.._etc-a_b.png"},
		{"TestÜber", "x:y", "Test_ber-x_y.png"},
	} {
		if got := fileName(tc.test, tc.name); got != tc.want {
			t.Errorf("fileName(%q, %q) = %q; want %q", tc.test, tc.name, got, tc.want)
		}
	}
}

func TestTailBufferDropsDBusNoise(t *testing.T) {
	t.Parallel()
	w := &tailBuffer{max: 16}
	for _, s := range []string{"[1:2:ERROR:dbus/bus.cc:405] Failed\n", "one\ntw", "o\n", "three\n", "four\n"} {
		_, _ = w.Write([]byte(s))
	}
	// The D-Bus line is gone and only the last 16 bytes remain.
	if got, want := w.String(), "\ntwo\nthree\nfour\n"; got != want {
		t.Errorf("tail = %q; want %q", got, want)
	}
}
