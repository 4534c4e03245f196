package edge

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
)

// The console session's cookie: SecureSessionCookie (a __Host- cookie, so
// no subdomain can set or widen it) when served over TLS, SessionCookie on
// plain HTTP, where a browser refuses a Secure cookie.
const (
	SessionCookie       = "kiln_session"
	SecureSessionCookie = "__Host-kiln_session"
)

// CSRFField is the form field (and CSRFHeader the header) that carries a
// session's CSRF token on a state-changing request.
const (
	CSRFField  = "csrf"
	CSRFHeader = "X-CSRF-Token"
)

// BrowserAuth is the authenticator of what browsers open (the console, the
// River UI): a Bearer token as Authenticate takes it, or else a console
// session's cookie. A cookie-borne request that changes state must come
// from Kiln's own pages: a cross-origin one (Sec-Fetch-Site, or Origin
// against Host) gets 403, and the console's handlers also check its CSRF
// token (CheckCSRF).
type BrowserAuth struct {
	Tokens   *auth.Authenticator // required
	Sessions *auth.Sessions      // required
	// SignIn answers a page load (GET or HEAD asking for HTML) without a
	// token or live session, e.g. with a redirect to the sign-in page;
	// nil, or any other request: 401.
	SignIn func(w http.ResponseWriter, r *http.Request)
	// Secure says the console is served over TLS even where r.TLS is nil
	// (TLS ends at a proxy): then only the __Host- cookie counts.
	Secure bool
	// CrossOrigin refuses cookie-borne writes from other origins; the
	// console's, which trusts its public URL's origin (behind a proxy that
	// rewrites Host) and checks its sign-in form with it too. Default: one
	// that trusts no other origin.
	CrossOrigin *http.CrossOriginProtection
}

// Middleware authenticates requests before next, which Principal then
// tells who they act as.
func (b *BrowserAuth) Middleware(next http.Handler) http.Handler {
	if b.Tokens == nil || b.Sessions == nil {
		panic("edge: BrowserAuth needs Tokens and Sessions")
	}
	bearer := Authenticate(b.Tokens)(next)
	crossOrigin := b.CrossOrigin
	if crossOrigin == nil {
		crossOrigin = http.NewCrossOriginProtection()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bearerScheme(r) { // it wins, and a bad one is refused; another scheme (a proxy's Basic) is not Kiln's
			bearer.ServeHTTP(w, r)
			return
		}
		id := SessionID(r, b.Secure || r.TLS != nil)
		if id == "" {
			b.refuse(w, r, Errorf(http.StatusUnauthorized, "sign in at /ui/login, or send an Authorization: Bearer token"))
			return
		}
		sess, err := b.Sessions.Lookup(r.Context(), id)
		if err != nil {
			if errors.Is(err, auth.ErrInvalidToken) {
				err = Errorf(http.StatusUnauthorized, "the console session has ended (signed out, expired or its token revoked): sign in again at /ui/login")
			}
			b.refuse(w, r, err)
			return
		}
		if err := crossOrigin.Check(r); err != nil {
			Write(w, r, Errorf(http.StatusForbidden, "a cross-origin request may not change anything"))
			return
		}
		next.ServeHTTP(w, actingAs(r, sess.Principal, sess))
	})
}

// bearerScheme reports whether r has an Authorization header of the Bearer scheme.
func bearerScheme(r *http.Request) bool {
	for _, v := range r.Header.Values("Authorization") {
		scheme, _, _ := strings.Cut(strings.TrimLeft(v, " \t"), " ")
		if strings.EqualFold(scheme, "Bearer") {
			return true
		}
	}
	return false
}

func (b *BrowserAuth) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if b.SignIn != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		strings.Contains(r.Header.Get("Accept"), "text/html") {
		b.SignIn(w, r)
		return
	}
	Write(w, r, err)
}

// SessionID returns the console session id r's cookie carries, or "": on
// a secure console only the __Host- cookie, which no other origin (a
// sibling subdomain, a plain-HTTP man in the middle) can set, so nobody can
// plant a session of theirs in a person's browser; on plain HTTP the plain one.
func SessionID(r *http.Request, secure bool) string {
	name := SessionCookie
	if secure {
		name = SecureSessionCookie
	}
	if c, err := r.Cookie(name); err == nil && c.Value != "" {
		return c.Value
	}
	return ""
}

// Session returns the console session the request ctx belongs to came
// with, or nil (a Bearer token, or not authenticated).
func Session(ctx context.Context) *auth.Session { return stateOf(ctx).session }

// CheckCSRF answers whether r, if it came with a console session, carries
// that session's CSRF token (form field CSRFField or header CSRFHeader):
// nil when it does or when r came with a Bearer token (which a browser
// never adds by itself), a 403 otherwise.
func CheckCSRF(r *http.Request) error {
	sess := Session(r.Context())
	if sess == nil {
		return nil
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		got = r.PostFormValue(CSRFField)
	}
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRF)) != 1 {
		return Errorf(http.StatusForbidden, "the form's CSRF token is missing or stale: reload the page and try again")
	}
	return nil
}
