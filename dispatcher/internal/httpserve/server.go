package httpserve

import (
	"cmp"
	"net/http"
	"time"
)

// Defaults of Options.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout       = 15 * time.Second
	DefaultWriteTimeout      = time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	// DefaultMaxConns fits deploy/base's 512Mi limit: an open event stream
	// costs some 12 KiB of RSS (tests/bench/abuse measures it), its buffer of
	// 256 events up to 18 KiB more (payloads are shared), so a full cap of
	// streams stays under 100 MiB.
	DefaultMaxConns = 2048
)

// Options bound a server's requests. Zero fields take the defaults.
type Options struct {
	// ReadHeaderTimeout bounds reading a request's headers, from its first
	// byte. Default DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// BodyTimeout is the read deadline of a request from the moment its
	// handler starts (its headers are read): the body must have arrived by
	// then. Event streams lift it (Stream). Default DefaultBodyTimeout.
	BodyTimeout time.Duration
	// WriteTimeout is the write deadline of a response from the moment its
	// handler starts. Event streams lift it and bound each write instead.
	// Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next request.
	// Default DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// NewServer returns a server for h whose every phase is bounded by o. Serve
// it on a Listen listener to cap its connections too.
func NewServer(h http.Handler, o Options) *http.Server {
	return &http.Server{
		Handler:           Deadlines(h, cmp.Or(o.BodyTimeout, DefaultBodyTimeout), cmp.Or(o.WriteTimeout, DefaultWriteTimeout)),
		ReadHeaderTimeout: cmp.Or(o.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       cmp.Or(o.IdleTimeout, DefaultIdleTimeout),
		ConnState:         connState, // a full LimitListener closes idle connections first
	}
}

// Deadlines sets the connection's read deadline to read and its write
// deadline to write from now, for each request, before next runs. A client
// that withholds its declared body is cut when read passes; one that does not
// take its answer, when write passes. net/http clears both between requests.
func Deadlines(next http.Handler, read, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		_ = rc.SetReadDeadline(now.Add(read))
		_ = rc.SetWriteDeadline(now.Add(write))
		next.ServeHTTP(w, r)
	})
}

// Stream lifts the request's read and write deadlines set by Deadlines: the
// response is a long-lived event stream (SSE or a WebSocket) whose client
// has authenticated. The caller bounds each write itself. Outside a
// net/http server (the Lambda front door) it does nothing.
func Stream(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}
