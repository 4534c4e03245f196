package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// DefaultStreamsPerToken is how many event streams (SSE and WebSocket) one
// token may hold open at once: twice the default number of builds in flight,
// so a bot fleet can watch every running build of its token and as many
// pending ones.
const DefaultStreamsPerToken = 100

// streamRetryAfter is the Retry-After of a refused stream: a slot frees when
// one of the token's streams ends, which no clock says.
const streamRetryAfter = 5 * time.Second

// StreamOptions configures NewStreams.
type StreamOptions struct {
	// Token returns the id of the token r was authenticated with; a stream
	// without one is neither counted nor re-checked. Required.
	Token func(r *http.Request) (id string, ok bool)
	// Max is how many streams one token may hold open; 0 means no cap.
	Max int
	// Valid asks, bypassing every cache, whether the token with id still
	// works; an open stream asks at each heartbeat and ends when the answer
	// is no. An error keeps the stream (a database that blinked revokes
	// nothing). nil: streams are never re-checked.
	Valid func(ctx context.Context, id string) (bool, error)
	// Reject writes the 429 answer; default TooManyRequests.
	Reject func(w http.ResponseWriter, r *http.Request, detail string, retryAfter time.Duration)
	Logger *slog.Logger // default: discard
}

// Streams caps the event streams each token holds open and tells an open
// stream when its token stopped working. It is the events handler's Guard.
type Streams struct {
	o      StreamOptions
	logger *slog.Logger

	mu   sync.Mutex
	open map[string]int // token id → open streams; no entry at 0
}

// NewStreams returns a Streams of o.
func NewStreams(o StreamOptions) *Streams {
	if o.Token == nil {
		panic("ratelimit: StreamOptions.Token is required")
	}
	if o.Reject == nil {
		o.Reject = TooManyRequests
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Streams{o: o, logger: logger.With("component", "streams"), open: map[string]int{}}
}

// Admit takes a slot for the stream r opens. When the token holds Max
// already, it answers 429 itself and returns ok false. Otherwise release
// gives the slot back (call it once, when the stream ends), and valid
// reports whether the token still works.
func (s *Streams) Admit(w http.ResponseWriter, r *http.Request) (valid func(context.Context) bool, release func(), ok bool) {
	id, ok := s.o.Token(r)
	if !ok {
		return func(context.Context) bool { return true }, func() {}, true
	}
	s.mu.Lock()
	if s.o.Max > 0 && s.open[id] >= s.o.Max {
		s.mu.Unlock()
		s.o.Reject(w, r, fmt.Sprintf("stream limit: this token may hold %d event streams open at once; close one first", s.o.Max),
			streamRetryAfter)
		return nil, nil, false
	}
	s.open[id]++
	s.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.open[id]--; s.open[id] <= 0 {
				delete(s.open, id)
			}
		})
	}
	return func(ctx context.Context) bool { return s.valid(ctx, id) }, release, true
}

func (s *Streams) valid(ctx context.Context, id string) bool {
	if s.o.Valid == nil {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ok, err := s.o.Valid(cctx, id)
	if err != nil {
		if ctx.Err() == nil { // not merely the stream ending
			s.logger.WarnContext(ctx, "could not re-check a stream's token; keeping the stream", "token_id", id, "error", err)
		}
		return true
	}
	return ok
}

// Open returns how many streams the token with id holds open.
func (s *Streams) Open(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open[id]
}
