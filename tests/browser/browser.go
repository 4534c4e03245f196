package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

const (
	// startTimeout bounds starting Chromium and opening its tab; generous
	// for a loaded 2-core CI machine.
	startTimeout = 60 * time.Second
	// closeTimeout bounds the graceful close before the process is killed.
	closeTimeout = 10 * time.Second
	// exitTimeout bounds how long Chromium's helper processes (zygote,
	// renderers, utilities) may take to follow the main process out.
	exitTimeout = 5 * time.Second
)

// Option changes how New starts the browser.
type Option func(*config)

type config struct {
	width, height int           // window size in CSS pixels; 1280x900
	timeout       time.Duration // per call of Run and the helpers; 30s
	acceptDialogs bool          // answer dialogs with OK rather than Cancel; false
}

// WithWindowSize sets the browser window's size in CSS pixels (default
// 1280x900). SetViewport changes the viewport of a running Browser.
func WithWindowSize(width, height int) Option {
	if width <= 0 || height <= 0 {
		panic(fmt.Sprintf("browser: window size %dx%d: both must be positive", width, height))
	}
	return func(c *config) { c.width, c.height = width, height }
}

// WithTimeout sets how long one call of Run, or of a helper such as Navigate,
// may take (default 30s). WaitText takes its own timeout.
func WithTimeout(d time.Duration) Option {
	if d <= 0 {
		panic(fmt.Sprintf("browser: timeout %v: must be positive", d))
	}
	return func(c *config) { c.timeout = d }
}

// WithAcceptDialogs makes the Browser answer dialogs with OK: confirm()
// returns true and prompt() its default text. By default it answers with
// Cancel (confirm() returns false, prompt() null). Either way the dialog is
// recorded in Dialogs. A beforeunload prompt is always accepted, so that
// navigating away never hangs.
func WithAcceptDialogs() Option {
	return func(c *config) { c.acceptDialogs = true }
}

// Browser is one headless Chromium with one tab, started by New for one test
// and stopped when that test ends. Its recording methods (Dialogs,
// Exceptions, Console, LogEntries) are safe to call from any goroutine; the
// methods that drive the tab (Run, Navigate, ...) act on one tab and must be
// called from one goroutine at a time.
type Browser struct {
	t       testing.TB
	ctx     context.Context // the tab's chromedp context; lives until cleanup
	timeout time.Duration
	dir     string         // holds the profile and the crash database; unique to this browser
	output  *tailBuffer    // Chromium's stdout and stderr, and chromedp's errors
	rec     recorder       // what the page did
	dialogs sync.WaitGroup // the goroutine that answers dialogs
}

// New starts a headless Chromium for t and returns it with a blank tab open.
// The browser, and every process it started, is stopped by t.Cleanup; New
// checks that none survives.
//
// New looks for the binary $KILN_CHROMIUM names, else chromium or
// chromium-browser on PATH. When there is none it skips t, or fails it when
// the CI environment variable is set; a $KILN_CHROMIUM that does not resolve
// always fails t.
func New(t testing.TB, opts ...Option) *Browser {
	t.Helper()
	cfg := config{width: 1280, height: 900, timeout: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	path, err := locate(os.Getenv, exec.LookPath)
	switch {
	case errors.Is(err, errNoChromium) && !onCI(os.Getenv):
		t.Skipf("browser: %v", err)
	case err != nil:
		t.Fatalf("browser: %v", err)
	}

	b := &Browser{
		t:       t,
		timeout: cfg.timeout,
		dir:     t.TempDir(),
		output:  &tailBuffer{max: 64 << 10},
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		// Debian's Chromium starts a crash handler that outlives the
		// browser by a moment, detached, keeping its database under
		// $XDG_CONFIG_HOME: point that here, so the handler's command line
		// names this directory and nothing is written to $HOME.
		chromedp.Env("XDG_CONFIG_HOME="+filepath.Join(b.dir, "config")),
		// The sandbox needs an unprivileged user; as root Chromium refuses
		// to start with it.
		chromedp.Flag("no-sandbox", os.Geteuid() == 0),
		chromedp.UserDataDir(filepath.Join(b.dir, "profile")),
		chromedp.WindowSize(cfg.width, cfg.height),
		chromedp.CombinedOutput(b.output),
	)...)
	ctx, cancelTab := chromedp.NewContext(allocCtx,
		chromedp.WithListener(b.rec.observe),
		chromedp.WithErrorf(b.output.printf),
		chromedp.WithLogf(b.output.printf),
	)
	b.ctx = ctx
	t.Cleanup(func() { b.close(cancelTab, cancelAlloc) })

	// The first Run binds the browser's life to its context, so it must not
	// carry a timeout of its own: bound it from outside.
	timer := time.AfterFunc(startTimeout, cancelTab)
	err = chromedp.Do(ctx)
	if !timer.Stop() {
		err = fmt.Errorf("no tab within %v: %w", startTimeout, context.DeadlineExceeded)
	}
	if err != nil {
		t.Fatalf("browser: starting %s: %v\n%s", path, err, b.output)
	}

	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	b.dialogs.Go(func() {
		for ev, err := range dialogs {
			if err != nil {
				return // the tab is closing
			}
			// Leaving a page is always allowed, or a navigation would
			// wait for ever behind its beforeunload prompt.
			accept := cfg.acceptDialogs || ev.Type == page.DialogTypeBeforeunload
			_, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: accept})
			if err != nil && ctx.Err() == nil {
				t.Errorf("browser: answering a JavaScript dialog: %v", err)
			}
		}
	})
	return b
}

// close stops the browser: a graceful Browser.close, then the contexts
// (which kill the process if it is still there and wait for it), then a
// check that no process of this browser's profile survives.
func (b *Browser) close(cancelTab, cancelAlloc context.CancelFunc) {
	ctx, cancel := context.WithTimeout(b.ctx, closeTimeout)
	err := chromedp.Cancel(ctx)
	cancel()
	cancelTab()
	cancelAlloc()
	b.dialogs.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		b.t.Logf("browser: closing Chromium gracefully: %v", err)
	}
	if left := b.survivors(exitTimeout); len(left) > 0 {
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		b.t.Errorf("browser: Chromium processes %v outlived the browser; killed them", left)
	}
	if b.t.Failed() {
		b.t.Logf("browser: Chromium's output (last %d bytes):\n%s", b.output.max, b.output)
	}
}

// survivors waits up to d for the processes of this browser to exit, and
// returns the pids of those that have not. A process is this browser's when
// its command line names b.dir, which is unique to it: Chromium passes
// --user-data-dir to every helper it starts, and the crash handler names its
// database. (Helpers rewrite their command line into one space-separated
// string, so look for the path anywhere in it.)
func (b *Browser) survivors(d time.Duration) []int {
	want := []byte(b.dir + string(filepath.Separator))
	deadline := time.Now().Add(d)
	for {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || pid == os.Getpid() || !bytes.Contains(cmdline, want) || zombie(pid) {
				continue
			}
			pids = append(pids, pid)
		}
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// zombie reports whether the process has exited and waits for its parent
// to reap it: it holds nothing and cannot be killed.
func zombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // gone
	}
	// The state follows the parenthesised command name, which may itself
	// hold spaces and parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] == 'Z'
	}
	return false
}

// Context returns the tab's chromedp context, for driving chromedp directly
// (chromedp.Run, chromedp.Call, chromedp.Events). It carries no deadline:
// derive one for each call. It is canceled when the test ends.
func (b *Browser) Context() context.Context { return b.ctx }

// Run runs the actions in order in the tab, stopping at the first error,
// within the Browser's timeout.
func (b *Browser) Run(actions ...chromedp.Action[chromedp.Void]) error {
	_, err := Get(b, chromedp.Steps(actions...))
	return err
}

// Get runs an action that returns a value in b's tab, within the Browser's
// timeout, and returns the value: title, err := browser.Get(b, chromedp.Title()).
func Get[T any](b *Browser, action chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && b.ctx.Err() == nil {
		err = fmt.Errorf("timed out after %v: %w", b.timeout, err)
	}
	return v, err
}

// tailBuffer is an io.Writer that keeps the last max bytes of the lines
// written to it, less Chromium's complaints that there is no D-Bus (every
// container and CI machine has none, and they would crowd out the rest). It is
// safe for concurrent use.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	partial []byte // the last line, until its newline arrives
}

// noise marks a line of Chromium's output that says nothing about a failure.
var noise = []byte("ERROR:dbus/")

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		if line := w.partial[:i+1]; !bytes.Contains(line, noise) {
			w.buf = append(w.buf, line...)
		}
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > w.max { // a line with no end: keep it anyway
		w.buf, w.partial = append(w.buf, w.partial...), nil
	}
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	w.partial = append([]byte(nil), w.partial...) // let the consumed prefix go
	return len(p), nil
}

func (w *tailBuffer) printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	_, _ = w.Write([]byte("chromedp: " + msg))
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf) + string(w.partial)
}
