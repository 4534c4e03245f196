// Package callback delivers a terminal build's callback: the River worker of
// queue.CallbackArgs POSTs the build's outcome to its callback_url, signed
// with the project's callback secret (HMAC-SHA256 over timestamp and body;
// docs/callbacks.md), retries 5xx, 429 and network errors with backoff for up
// to 24 hours, and records every attempt (shown in GET /builds/{id}).
//
// Its HTTP client connects only to addresses the SSRF Guard allows; the check
// runs in the dialer for the address actually connected to, so a name that
// resolves to a private or metadata address is refused even if it changed
// since the build was submitted. Redirects are not followed.
//
// It does not decide when a callback is due: package lifecycle inserts the
// job in the transaction that makes a build terminal.
package callback
