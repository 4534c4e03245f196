package browser

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
)

// Dialog is a JavaScript dialog the page opened, which the Browser answered.
type Dialog struct {
	Type    page.DialogType // alert, confirm, prompt or beforeunload
	Message string          // the text the dialog showed, as in alert(message)
	URL     string          // the URL of the frame that opened it
}

// recorder keeps what the page did, as the tab's events report it. Its
// methods are safe for concurrent use: observe runs on chromedp's reading
// goroutine, the accessors on the test's.
type recorder struct {
	mu         sync.Mutex
	dialogs    []Dialog
	exceptions []string
	console    []string
	logEntries []string
}

// observe records one event of the tab. It runs inside chromedp's message
// loop, so it must return fast and must not send commands.
func (r *recorder) observe(ev any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev := ev.(type) {
	case *page.EventJavascriptDialogOpening:
		r.dialogs = append(r.dialogs, Dialog{Type: ev.Type, Message: ev.Message, URL: ev.URL})
	case *runtime.EventExceptionThrown:
		r.exceptions = append(r.exceptions, exceptionText(ev.ExceptionDetails))
	case *runtime.EventConsoleAPICalled:
		r.console = append(r.console, string(ev.Type)+": "+argsText(ev.Args))
	case *log.EventEntryAdded:
		if e := ev.Entry; e != nil {
			r.logEntries = append(r.logEntries, string(e.Level)+" "+string(e.Source)+": "+e.Text)
		}
	}
}

func (r *recorder) snapshot(s *[]string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*s)
}

// Dialogs returns the JavaScript dialogs the page has opened so far, oldest
// first.
func (b *Browser) Dialogs() []Dialog {
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	return slices.Clone(b.rec.dialogs)
}

// Exceptions returns the uncaught exceptions and unhandled rejections so far,
// oldest first, each as DevTools shows it ("Uncaught TypeError: x is not a
// function").
func (b *Browser) Exceptions() []string { return b.rec.snapshot(&b.rec.exceptions) }

// Console returns the console API calls so far, oldest first, as
// "<type>: <arguments separated by spaces>" ("log: hello 42",
// "error: failed").
func (b *Browser) Console() []string { return b.rec.snapshot(&b.rec.console) }

// LogEntries returns the browser's log entries so far, oldest first, as
// "<level> <source>: <text>". Chromium reports a Content Security Policy
// violation here (and nowhere else: not as an exception, not as a console
// call), as an error from source "security" naming the directive: "error
// security: Executing inline script violates the following Content Security
// Policy directive 'script-src 'self”. ... The action has been blocked."
// Failed subresource loads (a 404 for an image) come from source "network".
func (b *Browser) LogEntries() []string { return b.rec.snapshot(&b.rec.logEntries) }

// exceptionText renders an exception as the DevTools console does: the text
// ("Uncaught") and the first line of the thrown value's description.
func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return ""
	}
	text := d.Text
	if d.Exception != nil {
		desc, _, _ := strings.Cut(valueText(d.Exception), "\n")
		text = strings.TrimSpace(text + " " + desc)
	}
	return text
}

// argsText renders the arguments of a console call, without applying
// format verbs such as %s.
func argsText(args []*runtime.RemoteObject) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = valueText(a)
	}
	return strings.Join(parts, " ")
}

// valueText renders a value: a string as it is, a primitive by its value, an
// object by its description.
func valueText(o *runtime.RemoteObject) string {
	switch {
	case o == nil:
		return "null"
	case o.Type == runtime.RemoteObjectTypeString:
		var s string
		if json.Unmarshal(o.Value, &s) == nil {
			return s
		}
	case o.Type == runtime.RemoteObjectTypeUndefined:
		return "undefined"
	}
	switch {
	case o.UnserializableValue != "":
		return string(o.UnserializableValue)
	case o.Description != "":
		return o.Description
	case len(o.Value) > 0:
		return string(o.Value)
	}
	return string(o.Type)
}
