package ratelimit

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
)

// The defaults of Options, which the configuration table shows. A bot fleet
// in normal use stays far below them (docs/limits.md says why); what they
// stop is one token or one address flooding the dispatcher.
var (
	// DefaultReads: a token may read (GET, HEAD, OPTIONS) 100 times a
	// second, 500 at once — a fleet of hundreds of bots polling their
	// builds every second on one token.
	DefaultReads = Limit{Rate: 100, Burst: 500}
	// DefaultWrites: a token may write (submit, cancel, create) 10 times a
	// second, 200 at once. 10 builds a second is 36,000 an hour, dozens of
	// times what a cluster with the default 50 builds in flight can run;
	// the burst lets a bot fan one change out over 200 projects at once.
	DefaultWrites = Limit{Rate: 10, Burst: 200}
	// DefaultAnonymous: a client address may send 20 requests a second,
	// 100 at once, that carry no credential (probes, scrapes, the OpenAPI
	// document) or are refused with 401; requests a token (or a runner
	// token) was accepted for are not counted.
	DefaultAnonymous = Limit{Rate: 20, Burst: 100}
)

// Options configures New. A zero Limit is its default; Unlimited turns one off.
type Options struct {
	// Token returns the id of the token r was authenticated with, or ok
	// false when it was not. Required by PerToken, which runs after
	// authentication.
	Token func(r *http.Request) (id string, ok bool)
	// Reads limits each token's GET, HEAD and OPTIONS requests (event
	// streams included). Default DefaultReads.
	Reads Limit
	// Writes limits each token's other requests: build submissions,
	// cancels, project changes. Default DefaultWrites.
	Writes Limit
	// Anonymous limits, per client address, the requests that carry no
	// Authorization header or are answered 401. While an address's bucket
	// is empty every request from it is refused, a valid token's too:
	// otherwise invalid tokens would be a way around the limit. Default
	// DefaultAnonymous.
	Anonymous Limit
	// TrustedProxies are the addresses of reverse proxies in front of the
	// dispatcher. Only a request that comes from one of them has its
	// client address taken from X-Forwarded-For (the right-most address
	// that is not a trusted proxy); from anyone else the header is
	// ignored. Default none: the connection's address is the client's.
	TrustedProxies []netip.Prefix
	// Reject writes the 429 answer; default: problem+json like the API's,
	// with Retry-After.
	Reject  func(w http.ResponseWriter, r *http.Request, detail string, retryAfter time.Duration)
	Now     func() time.Time // default time.Now
	MaxKeys int              // buckets kept per limiter; default DefaultMaxKeys
}

// Limits holds the buckets of the dispatcher's rate limits and the two
// middlewares that apply them.
type Limits struct {
	o                     Options
	reads, writes, anonym *Limiter
}

// New checks o, fills in its defaults and returns the limits.
func New(o Options) (*Limits, error) {
	for _, l := range []struct {
		name string
		dst  *Limit
		def  Limit
	}{{"Reads", &o.Reads, DefaultReads}, {"Writes", &o.Writes, DefaultWrites}, {"Anonymous", &o.Anonymous, DefaultAnonymous}} {
		if *l.dst == (Limit{}) {
			*l.dst = l.def
		}
		if err := l.dst.Validate(); err != nil {
			return nil, fmt.Errorf("ratelimit: %s: %w", l.name, err)
		}
	}
	if o.Reject == nil {
		o.Reject = TooManyRequests
	}
	return &Limits{o: o,
		reads:  NewLimiter(o.Reads, o.Now, o.MaxKeys),
		writes: NewLimiter(o.Writes, o.Now, o.MaxKeys),
		anonym: NewLimiter(o.Anonymous, o.Now, o.MaxKeys),
	}, nil
}

// PerToken limits the requests of each token, reads and writes apart. It
// goes after authentication; a request without a token passes untouched.
func (l *Limits) PerToken(next http.Handler) http.Handler {
	if l.o.Token == nil {
		panic("ratelimit: PerToken needs Options.Token")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := l.o.Token(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		lim, what := l.writes, "write requests"
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			lim, what = l.reads, "read requests"
		}
		if ok, wait := lim.Allow(id); !ok {
			l.o.Reject(w, r, fmt.Sprintf("rate limit: this token may make %s at %s; retry in %ds",
				what, lim.Limit(), retryAfter(wait)), wait)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Anonymous limits, per client address, the requests that carry no
// credential or whose credential is refused (401) — a console session's
// cookie is a credential as a Bearer token is: it refuses a request
// while the address's bucket is empty and charges the bucket once the
// answer shows the request was anonymous. It goes first, before routing
// and authentication.
func (l *Limits) Anonymous(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, ok := ClientAddress(r, l.o.TrustedProxies)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		key := addressKey(addr)
		if ok, wait := l.anonym.Check(key); !ok {
			l.o.Reject(w, r, fmt.Sprintf("rate limit: this address may send requests without a valid token at %s; retry in %ds",
				l.anonym.Limit(), retryAfter(wait)), wait)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if !l.authenticated(r) || sw.status == http.StatusUnauthorized {
			l.anonym.Charge(key)
		}
	})
}

// authenticated reports, once r was answered, whether it carried a
// credential: the token Options.Token found (a Bearer header or a console
// session's cookie), or, without Options.Token, an Authorization header.
func (l *Limits) authenticated(r *http.Request) bool {
	if l.o.Token != nil {
		_, ok := l.o.Token(r)
		return ok
	}
	return r.Header.Get("Authorization") != ""
}

// ClientAddress returns the address of r's client: the connection's peer,
// or, when that is one of trusted, the right-most X-Forwarded-For address
// that is not.
func ClientAddress(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	addr, ok := parseAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if !in(addr, trusted) {
		return addr, true
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseAddr(strings.TrimSpace(hops[i]))
		if !ok {
			break // a hop we cannot read: trust nothing further left
		}
		if !in(hop, trusted) {
			return hop, true
		}
	}
	return addr, true
}

func parseAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}

func in(a netip.Addr, prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addressKey is an address's bucket: an IPv4 address, or an IPv6 /64 (what
// one site or host is given, so it cannot step through its addresses).
func addressKey(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// statusWriter remembers the status of the answer. Unwrap lets
// http.ResponseController (SSE flushes, deadlines) and WebSocket upgrades
// reach the writer underneath.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TooManyRequests answers 429 as RFC 9457 problem+json, shaped as the API's
// problems are, with Retry-After in whole seconds (at least 1).
func TooManyRequests(w http.ResponseWriter, r *http.Request, detail string, wait time.Duration) {
	edge.Write(w, r, edge.TooManyRequests(wait, detail))
}
