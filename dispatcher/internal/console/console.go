package console

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/events"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
)

// Prefix is where the console is served.
const Prefix = "/ui"

//go:embed static
var staticFS embed.FS

// Options configures New.
type Options struct {
	Intake   *intake.Service     // required
	Tokens   *auth.Authenticator // required: signing in checks the token
	Sessions *auth.Sessions      // required
	// Events serves the build page's live timeline (SSE) at
	// /ui/builds/{id}/events; nil: the page shows no timeline.
	Events *events.Handler
	// Limit, if set, runs right after authentication (per-token limits).
	Limit func(http.Handler) http.Handler
	// PublicURL is the console's public base URL; an https one makes the
	// session cookie Secure even where TLS ends before the dispatcher.
	PublicURL string
	// RiverUI links /riverui/ from admins' pages.
	RiverUI bool
	Logger  *slog.Logger     // default: discard
	Now     func() time.Time // default time.Now
}

// Console serves the pages.
type Console struct {
	o      Options
	logger *slog.Logger
	now    func() time.Time
	auth   *edge.BrowserAuth
	pages  *pages
	assets string // the path the static assets are served at: /ui/static/<content hash>
	static http.Handler
	events *events.Handler // o.Events, its streams also ended by the end of their session
	// crossOrigin refuses cookie-borne writes (BrowserAuth) and sign-ins
	// (a login CSRF would sign a person in as the attacker) from other
	// origins than the console's own and its public URL's.
	crossOrigin *http.CrossOriginProtection
	secure      bool // the public URL is https
}

// New returns the console.
func New(o Options) (*Console, error) {
	if o.Intake == nil || o.Tokens == nil || o.Sessions == nil {
		return nil, errors.New("console: Intake, Tokens and Sessions are required")
	}
	c := &Console{o: o, logger: cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "console"),
		now: o.Now, secure: strings.HasPrefix(o.PublicURL, "https://")}
	if c.now == nil {
		c.now = time.Now
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	sum, err := hashFS(sub)
	if err != nil {
		return nil, err
	}
	c.assets = Prefix + "/static/" + sum
	c.static = http.StripPrefix(c.assets+"/", http.FileServerFS(sub))
	if c.pages, err = parsePages(c.assets); err != nil {
		return nil, err
	}
	if o.Events != nil {
		ev := *o.Events
		ev.Guard = &sessionGuard{inner: o.Events.Guard, sessions: o.Sessions, sessionID: c.sessionID}
		c.events = &ev
	}
	c.crossOrigin = http.NewCrossOriginProtection()
	if o.PublicURL != "" {
		u, err := url.Parse(o.PublicURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("console: PublicURL %q is not an absolute URL", o.PublicURL)
		}
		if err := c.crossOrigin.AddTrustedOrigin(u.Scheme + "://" + u.Host); err != nil {
			return nil, fmt.Errorf("console: PublicURL: %w", err)
		}
	}
	c.auth = &edge.BrowserAuth{Tokens: o.Tokens, Sessions: o.Sessions, SignIn: c.signInFirst, Secure: c.secure,
		CrossOrigin: c.crossOrigin}
	return c, nil
}

// hashFS is a short hash of every file of fsys, so the assets' URL changes
// with them and browsers may keep them for good.
func hashFS(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		h.Write([]byte(p))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12], err
}

// Authenticate is the console's authenticator (a session cookie or a
// Bearer token; a page load without either goes to the sign-in page),
// then the per-token limits: for the console and the River UI.
func (c *Console) Authenticate(next http.Handler) http.Handler {
	if c.o.Limit != nil {
		next = c.o.Limit(next)
	}
	return c.auth.Middleware(next)
}

// Mount adds the console's routes under Prefix.
func (c *Console) Mount(r chi.Router) {
	r.Get(Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusMovedPermanently)
	})
	r.Route(Prefix, func(r chi.Router) {
		r.Use(Headers)
		if c.secure {
			r.Use(HSTS)
		}
		r.NotFound(func(w http.ResponseWriter, r *http.Request) {
			c.fail(w, r, edge.Errorf(http.StatusNotFound, "there is no page at %s", r.URL.Path))
		})
		r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
			c.fail(w, r, edge.Errorf(http.StatusMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
		})
		r.Get("/static/{sum}/*", c.serveStatic)
		r.Get("/login", c.loginPage)
		r.Post("/login", c.login)
		r.Group(func(r chi.Router) {
			r.Use(c.Authenticate)
			r.Post("/logout", c.logout)
			r.Get("/", c.projectsPage)
			r.Get("/overview", c.overviewPage)
			r.Get("/projects/{id}", c.projectPage)
			r.Get("/builds/{taskId}", c.buildPage)
			r.Post("/builds/{taskId}/cancel", c.cancel)
			r.Post("/builds/{taskId}/followups", c.followup)
			r.Get("/builds/{taskId}/artifacts/*", c.artifact)
			if c.events != nil {
				r.Get("/builds/{taskId}/events", c.events.ServeEvents)
			}
		})
	})
}

// Headers sets the console's security headers: a Content-Security-Policy
// that allows only the console's own script, styles and connections (no
// inline script or style, no plugins, no framing, forms posting only to
// the console), X-Frame-Options DENY for older browsers, no sniffing, no
// referrer beyond the origin, and no caching of pages. The River UI gets
// them too, but for its own CSP.
func Headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		FrameDeny(h)
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// HSTS tells browsers to reach the console over https only (a console
// whose public URL is https).
func HSTS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

// FrameDeny sets the headers that keep a page out of frames and unsniffed.
func FrameDeny(h http.Header) {
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// RiverUIHeaders are the River UI's security headers: FrameDeny's, no
// caching (its API answers hold job arguments), and a CSP that lets only
// its own scripts run (its bundle needs inline styles, nothing inline of
// script), since a job's arguments and errors are attacker-controlled and
// an admin's session is what the UI runs as.
func RiverUIHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		FrameDeny(h)
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "+
			"img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

func (c *Console) serveStatic(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, c.assets+"/") { // an older version's hash
		c.fail(w, r, edge.Errorf(http.StatusNotFound, "there is no asset at %s", r.URL.Path))
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	c.static.ServeHTTP(w, r)
}

// signInFirst answers a page load without a session: to the sign-in page,
// which brings the person back here after. A navigation from another site
// does not carry the SameSite=Strict cookie; it gets a page that reloads
// itself from this origin (which does carry it) before sign-in is asked.
func (c *Console) signInFirst(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" && r.URL.Query().Get("again") == "" {
		q := r.URL.Query()
		q.Set("again", "1")
		c.render(w, r, http.StatusOK, "reload", &reloadPage{URL: r.URL.EscapedPath() + "?" + q.Encode()})
		return
	}
	http.Redirect(w, r, Prefix+"/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
}

// localNext returns where to go after signing in: next when it is a path
// of the console or the River UI on this origin, else the projects page.
func localNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Scheme != "" || u.Host != "" || u.User != nil ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") {
		return Prefix + "/"
	}
	p := path.Clean(u.Path)
	if p != Prefix && !strings.HasPrefix(p, Prefix+"/") && p != "/riverui" && !strings.HasPrefix(p, "/riverui/") {
		return Prefix + "/"
	}
	if strings.HasSuffix(u.Path, "/") && p != "/" {
		p += "/"
	}
	u.Path = p
	return u.RequestURI()
}

// sessionID is the session id r's cookie carries (edge.SessionID).
func (c *Console) sessionID(r *http.Request) string {
	return edge.SessionID(r, r.TLS != nil || c.secure)
}

// cookieName is the session cookie's name on r's connection, and whether
// it is Secure.
func (c *Console) cookieName(r *http.Request) (string, bool) {
	if r.TLS != nil || c.secure {
		return edge.SecureSessionCookie, true
	}
	return edge.SessionCookie, false
}

// maxFormBytes bounds the console's form posts (a follow-up's prompt is the
// largest).
const maxFormBytes = 256 << 10

func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		return edge.Errorf(http.StatusUnsupportedMediaType, "Content-Type: must be application/x-www-form-urlencoded")
	}
	return r.ParseForm()
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	next := localNext(r.URL.Query().Get("next"))
	if id := c.sessionID(r); id != "" {
		if _, err := c.o.Sessions.Lookup(r.Context(), id); err == nil {
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		}
	}
	c.render(w, r, http.StatusOK, "login", &loginPage{Next: next})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if err := c.crossOrigin.Check(r); err != nil {
		c.fail(w, r, edge.Errorf(http.StatusForbidden, "a sign-in must come from this console's own page"))
		return
	}
	if err := parseForm(w, r); err != nil {
		c.fail(w, r, err)
		return
	}
	next := localNext(r.PostFormValue("next"))
	token := strings.TrimSpace(r.PostFormValue("token"))
	again := func(status int, msg string) {
		c.render(w, r, status, "login", &loginPage{Next: next, Error: msg})
	}
	if token == "" {
		again(http.StatusUnprocessableEntity, "Enter a Kiln token.")
		return
	}
	p, err := c.o.Tokens.Authenticate(r.Context(), token)
	if errors.Is(err, auth.ErrInvalidToken) {
		again(http.StatusUnauthorized, "That token is not valid: it is unknown or has been revoked.")
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if old := c.sessionID(r); old != "" { // signing in again replaces the browser's session
		if err := c.o.Sessions.Delete(r.Context(), old); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	id, sess, err := c.o.Sessions.Create(r.Context(), p)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	name, secure := c.cookieName(r)
	http.SetCookie(w, &http.Cookie{Name: name, Value: id, Path: "/", Expires: sess.Expires,
		MaxAge: int(time.Until(sess.Expires).Seconds()), HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
	c.logger.InfoContext(r.Context(), "console sign-in", "token_id", p.TokenID, "token_name", p.Name,
		"request_id", edge.RequestID(r.Context()))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		c.fail(w, r, err)
		return
	}
	if err := edge.CheckCSRF(r); err != nil {
		c.fail(w, r, err)
		return
	}
	if id := c.sessionID(r); id != "" {
		if err := c.o.Sessions.Delete(r.Context(), id); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	for _, name := range []string{edge.SessionCookie, edge.SecureSessionCookie} {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
			Secure: name == edge.SecureSessionCookie, SameSite: http.SameSiteStrictMode})
	}
	http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
}

// fail answers err as an HTML page with the status the API would answer it
// with (a build or project the token may not see is a 404 page).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := edge.ProblemOf(w, r, err)
	c.render(w, r, p.Status, "error", &errorPage{Problem: p})
}

// sessionGuard admits event streams as the dispatcher's guard does, and
// ends a stream opened with a console session once that session has ended
// (signed out, expired), not only once its token is revoked: the guard
// re-checks at each heartbeat.
type sessionGuard struct {
	inner     events.Guard // nil: admit every stream
	sessions  *auth.Sessions
	sessionID func(*http.Request) string
}

func (g *sessionGuard) Admit(w http.ResponseWriter, r *http.Request) (func(context.Context) bool, func(), bool) {
	valid, release, ok := func(context.Context) bool { return true }, func() {}, true
	if g.inner != nil {
		if valid, release, ok = g.inner.Admit(w, r); !ok {
			return valid, release, false
		}
	}
	id := g.sessionID(r)
	if edge.Session(r.Context()) == nil || id == "" { // a Bearer token: the token's check is the one
		return valid, release, true
	}
	return func(ctx context.Context) bool {
		if !valid(ctx) {
			return false
		}
		_, err := g.sessions.Lookup(ctx, id)
		return !errors.Is(err, auth.ErrInvalidToken) // a database blip does not end the stream
	}, release, true
}
