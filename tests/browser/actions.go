package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// pollInterval is how often WaitText looks at the page.
const pollInterval = 50 * time.Millisecond

// Navigate loads url in the tab, waits for its load event, and returns the
// HTTP status of the main document. A status of 4xx or 5xx is not an error:
// the page still loads, and the test decides.
func (b *Browser) Navigate(url string) (status int, err error) {
	resp, err := Get(b, chromedp.NavigateResponse(url))
	if err != nil {
		return 0, fmt.Errorf("navigating to %s: %w", url, err)
	}
	if resp == nil {
		return 0, fmt.Errorf("navigating to %s: no HTTP response for the document", url)
	}
	return int(resp.Status), nil
}

// Text returns the rendered text (innerText) of the first element that the
// CSS selector sel matches, waiting for one to appear.
func (b *Browser) Text(sel string) (string, error) {
	text, err := Get(b, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		return "", fmt.Errorf("reading the text of %s: %w", sel, err)
	}
	return text, nil
}

// Eval evaluates the JavaScript expression js in the page, awaiting it if it
// is a promise, and decodes its JSON value into out, as json.Unmarshal does.
// With a nil out the value is ignored. An exception thrown by js is returned
// as an error (*chromedp.ExceptionError) and is not recorded in Exceptions.
func (b *Browser) Eval(js string, out any) error {
	raw, err := Get(b, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
	if err != nil {
		return fmt.Errorf("evaluating %s: %w", js, err)
	}
	if out == nil {
		return nil
	}
	if len(raw) == 0 {
		return fmt.Errorf("evaluating %s: %w", js, chromedp.ErrJSUndefined)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding the value of %s: %w", js, err)
	}
	return nil
}

// WaitVisible waits for an element that the CSS selector sel matches to be
// visible, within the Browser's timeout.
func (b *Browser) WaitVisible(sel string) error {
	if err := b.Run(chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		return fmt.Errorf("waiting for %s to be visible: %w", sel, err)
	}
	return nil
}

// WaitText waits up to timeout for the textContent of the first element that
// the CSS selector sel matches to contain substring, and returns an error
// saying what the element held last when it does not.
func (b *Browser) WaitText(sel, substring string, timeout time.Duration) error {
	quoted, err := json.Marshal(sel)
	if err != nil {
		return fmt.Errorf("waiting for %q in %s: %w", substring, sel, err)
	}
	js := "(() => { const el = document.querySelector(" + string(quoted) + "); return el ? el.textContent : null })()"
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	var last *string
	for {
		text, err := chromedp.Run(ctx, chromedp.Evaluate[*string](js))
		var exc *chromedp.ExceptionError
		switch {
		case errors.As(err, &exc): // an invalid selector: waiting will not help
			return fmt.Errorf("waiting for %q in %s: %w", substring, sel, err)
		case err == nil:
			if text != nil && strings.Contains(*text, substring) {
				return nil
			}
			last = text
		}
		// Other errors (the page navigating between two looks) are retried.
		select {
		case <-ctx.Done():
			seen := "no element matched"
			if last != nil {
				seen = fmt.Sprintf("its text was %q", *last)
			}
			return fmt.Errorf("waiting %v for %q in %s: %s: %w", timeout, substring, sel, seen, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// Screenshot writes a PNG of the whole page (beyond the viewport) to the
// artifacts directory, as "<test name>-<name>.png", logs its path and
// returns it. The directory is $KILN_TEST_ARTIFACTS, else
// tests/artifacts/browser in the repository, which git ignores.
func (b *Browser) Screenshot(name string) (string, error) {
	png, err := Get(b, chromedp.FullScreenshot(100))
	if err != nil {
		return "", fmt.Errorf("taking screenshot %s: %w", name, err)
	}
	dir, err := artifactsDir()
	if err != nil {
		return "", fmt.Errorf("saving screenshot %s: %w", name, err)
	}
	path := filepath.Join(dir, fileName(b.t.Name(), name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", fmt.Errorf("saving screenshot %s: %w", name, err)
	}
	b.t.Logf("browser: screenshot %s", path)
	return path, nil
}

// SetViewport makes the page's viewport width x height CSS pixels (at scale
// 1, landscape, no touch), as for checking a narrow layout.
func (b *Browser) SetViewport(width, height int) error {
	if err := b.Run(chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		return fmt.Errorf("setting the viewport to %dx%d: %w", width, height, err)
	}
	return nil
}

// Cookies returns the cookies the browser would send to the page's URL,
// HttpOnly ones included (document.cookie leaves those out).
func (b *Browser) Cookies() ([]*network.Cookie, error) {
	cookies, err := Get(b, func(ctx context.Context, t *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{})
		return res.Cookies, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading cookies: %w", err)
	}
	return cookies, nil
}
