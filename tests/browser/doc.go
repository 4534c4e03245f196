// Package browser drives a real, headless Chromium for tests of Kiln's web
// console: a test calls New, points the browser at an httptest server or a
// running dispatcher, and asserts on what a user would see and on what the
// page did behind their back.
//
// Besides running chromedp actions with a per-call timeout, a Browser records
// from the moment the tab opens:
//
//   - JavaScript dialogs (alert, confirm, prompt), which it answers at once so
//     that the page does not hang: a dialog a test did not expect is usually
//     injected script that ran;
//   - uncaught exceptions and console API calls;
//   - browser log entries, which is where Chromium reports Content Security
//     Policy violations (an entry with source "security").
//
// New skips the test when no Chromium is installed (run `make chromium`), and
// fails it instead when the CI environment variable is set, so a CI machine
// never passes by skipping. The browser runs in its own temporary profile and
// is stopped, with every process it started, when the test ends.
//
// It is not a general browser-automation library: one Browser is one tab,
// driven from one goroutine; it has no page objects, no visual diffing, and no
// support for browsers other than Chromium.
package browser
