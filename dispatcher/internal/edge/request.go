package edge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
)

type ctxKey struct{}

// state is what the edge knows of one request. Requests makes it; the
// authenticator fills in who; the request log of the router reads it after
// the handler ran, so it is shared by pointer.
type state struct {
	id     string
	logger *slog.Logger
	who    atomic.Pointer[auth.Principal]
	// The console session the request came with (BrowserAuth); nil for
	// a Bearer token. Set before the handler runs.
	session *auth.Session
	body    *trackedBody // nil: the body is not tracked
}

func stateOf(ctx context.Context) *state {
	s, _ := ctx.Value(ctxKey{}).(*state)
	if s == nil {
		return &state{}
	}
	return s
}

func (s *state) log() *slog.Logger {
	if s.logger == nil {
		return fallbackLogger()
	}
	return s.logger
}

// RequestID returns the id of the request ctx belongs to ("" outside Requests).
func RequestID(ctx context.Context) string { return stateOf(ctx).id }

func requestIDOf(s *state, w http.ResponseWriter) string {
	if s.id != "" {
		return s.id
	}
	return w.Header().Get("X-Request-Id")
}

var safeRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Requests is the first middleware of a router: it takes a sane
// X-Request-Id from the caller or makes one, echoes it in the answer, and
// keeps the request's state (its id, its principal, whether its body was
// read) for the rest of the edge. Problems of the request are logged
// through logger (nil: slog.Default()).
func Requests(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Request-Id")
			if !safeRequestID.MatchString(id) {
				b := make([]byte, 8)
				_, _ = rand.Read(b)
				id = hex.EncodeToString(b)
			}
			w.Header().Set("X-Request-Id", id)
			st := &state{id: id, logger: logger}
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, st))
			if r.Body != nil && r.Body != http.NoBody {
				st.body = &trackedBody{ReadCloser: r.Body}
				r.Body = st.body
			}
			next.ServeHTTP(w, r)
		})
	}
}

// trackedBody notes whether its reader reached the end.
type trackedBody struct {
	io.ReadCloser
	done atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.done.Store(true)
	}
	return n, err
}

// dropUnreadBody makes sure an answer does not wait for a body nobody will
// read: net/http would otherwise try to drain it (up to 256 KiB) before
// writing the answer, and a client that declared a body but sends none
// would hold the answer, the goroutine and the connection. The connection
// is closed after the answer instead.
func (s *state) dropUnreadBody(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody || r.ProtoMajor != 1 {
		return
	}
	if s.body != nil && s.body.done.Load() {
		return
	}
	if r.Header.Get("Upgrade") != "" {
		return
	}
	// Only a real connection has a read deadline (a Lambda request's body
	// is in memory, and it has no connection to close).
	if err := http.NewResponseController(w).SetReadDeadline(time.Now()); err != nil {
		return
	}
	w.Header().Set("Connection", "close")
}
