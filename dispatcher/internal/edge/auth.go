package edge

import (
	"context"
	"net/http"
	"strings"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
)

// BearerToken returns the token of r's Authorization header when its scheme
// is Bearer. The scheme is matched case-insensitively (RFC 9110, section
// 11.1); one or more spaces may follow it; a request with more than one
// Authorization header has none.
func BearerToken(r *http.Request) (string, bool) {
	vs := r.Header.Values("Authorization")
	if len(vs) != 1 {
		return "", false
	}
	scheme, rest, ok := strings.Cut(strings.TrimLeft(vs[0], " \t"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token := strings.Trim(rest, " \t")
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

// Principal returns who the request ctx belongs to acts as: the principal
// Authenticate resolved, or nil.
func Principal(ctx context.Context) *auth.Principal { return stateOf(ctx).who.Load() }

// Authenticate is the one authenticator middleware: it resolves the bearer
// token into a principal that Principal then returns, or answers 401
// (WWW-Authenticate: Bearer), or 503 while the token store is unreachable.
func Authenticate(a *auth.Authenticator) func(http.Handler) http.Handler {
	if a == nil {
		panic("edge: Authenticate needs an Authenticator")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := BearerToken(r)
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
				Write(w, r, Errorf(http.StatusUnauthorized, "Authorization: a Bearer token is required"))
				return
			}
			p, err := a.Authenticate(r.Context(), token)
			if err != nil { // auth.ErrInvalidToken answers 401 with the challenge
				Write(w, r, err)
				return
			}
			next.ServeHTTP(w, actingAs(r, p, nil))
		})
	}
}

// actingAs records on r's edge state (made here when Requests did not run)
// who r acts as and the console session it came with (nil: a Bearer token).
func actingAs(r *http.Request, p *auth.Principal, sess *auth.Session) *http.Request {
	st, ok := r.Context().Value(ctxKey{}).(*state)
	if !ok {
		st = &state{}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, st))
	}
	st.session = sess
	st.who.Store(p)
	return r
}

// RequireAdmin lets only admin principals through: no principal answers 401,
// a project token 403 with detail.
func RequireAdmin(detail string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch p := Principal(r.Context()); {
			case p == nil:
				w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
				Write(w, r, Errorf(http.StatusUnauthorized, "Authorization: an admin Bearer token is required"))
			case !p.Admin:
				Write(w, r, Errorf(http.StatusForbidden, "%s", detail))
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}
