package events

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Channel is the Postgres channel the build_events trigger notifies on
// (schema/migrations/00002_live.sql), with payload "<schema> <build id> <seq>".
const Channel = "kiln_events"

// ErrStopped is returned by Subscribe and Start once the hub is stopped.
var ErrStopped = errors.New("events: hub is stopped")

// ErrNotStarted is returned by Subscribe before Start.
var ErrNotStarted = errors.New("events: hub is not started")

// Defaults the dispatcher's configuration shows: Options.Buffer and Handler.Heartbeat.
const (
	DefaultBuffer    = 256
	DefaultHeartbeat = 15 * time.Second
)

// Options configures NewHub.
type Options struct {
	Pool   *pgxpool.Pool // required; events are read from it, and the listener's connection copies its config
	Logger *slog.Logger  // default: discard
	// Buffer is how many events may wait for one live subscriber; a
	// subscriber with a full buffer is dropped. Default 256.
	Buffer int
	// PollInterval re-reads every followed build even without a
	// notification, in case one was missed. Default 10s.
	PollInterval time.Duration
	// MaxReconnectDelay caps the listener's backoff after losing its
	// connection. Default 5s.
	MaxReconnectDelay time.Duration
	// PageSize is how many events one read returns. Default 500.
	PageSize int
}

// Hub fans build events out to the subscribers of this process. It holds
// one LISTEN connection; a notification only wakes the build's feed, which
// reads new events from build_events once and hands them to every local
// subscriber.
//
// Its goroutines (the listener, one per followed build) run between Start
// and Stop, under a context derived from Start's that Stop cancels; Stop
// waits for them.
type Hub struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	o      Options

	mu      sync.Mutex
	feeds   map[string]*feed
	started bool          // guarded by mu
	stopped bool          // guarded by mu
	done    chan struct{} // closed by Stop: streams end so clients resume elsewhere

	listening bool               // guarded by mu
	ctx       context.Context    // Start's without its cancellation, until Stop; guarded by mu
	cancel    context.CancelFunc // ends ctx; guarded by mu
	wg        sync.WaitGroup

	reconnectDelay time.Duration // the listener's first backoff; tests lengthen it
}

// feed follows one build for its local subscribers.
type feed struct {
	id     string
	wake   chan struct{} // capacity 1: wake-ups coalesce
	quit   chan struct{} // closed when the last subscriber leaves
	cursor int64         // highest seq read and handed out; guarded by Hub.mu
	subs   map[*Subscription]struct{}
}

// Subscription receives a build's events as the hub reads them.
type Subscription struct {
	hub  *Hub
	feed *feed
	// C carries events in seq order. It may repeat events the subscriber
	// already replayed from the database; compare seq.
	C chan schema.Event
	// Dropped is closed when the subscriber fell Buffer events behind and
	// was dropped; it should tell its client where to resume.
	Dropped chan struct{}

	catchingUp bool // guarded by Hub.mu: overflow sets lagged instead of dropping
	lagged     bool // guarded by Hub.mu
	closed     bool // guarded by Hub.mu
}

// NewHub returns a Hub; it listens once Start is called.
func NewHub(o Options) (*Hub, error) {
	if o.Pool == nil {
		return nil, errors.New("events: Pool is required")
	}
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	o.Buffer = cmp.Or(o.Buffer, DefaultBuffer)
	o.PollInterval = cmp.Or(o.PollInterval, 10*time.Second)
	o.MaxReconnectDelay = cmp.Or(o.MaxReconnectDelay, 5*time.Second)
	o.PageSize = cmp.Or(o.PageSize, 500)
	if o.Buffer < 1 || o.PollInterval < 0 || o.PageSize < 1 {
		return nil, errors.New("events: Buffer and PageSize must be positive")
	}
	return &Hub{pool: o.Pool, logger: o.Logger.With("component", "events"), o: o, feeds: map[string]*feed{}, done: make(chan struct{}),
		reconnectDelay: 50 * time.Millisecond}, nil
}

// Start checks that the database answers; from then on Subscribe works. The
// listener connects when the first stream subscribes (a process nobody
// watches holds no LISTEN connection) and stays connected until Stop. Every
// goroutine of the hub runs under ctx's values but not its cancellation:
// Stop ends them. A stopped hub does not start again.
func (h *Hub) Start(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.pool.Ping(pctx); err != nil {
		return fmt.Errorf("events: database unreachable: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.stopped:
		return ErrStopped
	case h.started:
		return errors.New("events: hub is already started")
	}
	h.started = true
	h.ctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return nil
}

// listenLocked starts the listener once; it wakes every feed when connected,
// so a notification sent before then is not missed.
func (h *Hub) listenLocked() {
	if h.listening {
		return
	}
	h.listening = true
	ctx := h.ctx
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.listen(ctx)
	}()
}

// Stop closes the listener and every feed, tells open streams to end (their
// clients resume on another replica), and waits for the hub's goroutines. It
// may be called more than once, and without Start.
func (h *Hub) Stop() {
	h.mu.Lock()
	if !h.stopped {
		close(h.done)
	}
	h.stopped = true
	for id, f := range h.feeds {
		close(f.quit)
		delete(h.feeds, id)
	}
	cancel := h.cancel
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	h.wg.Wait()
}

func (h *Hub) connect(ctx context.Context) (*pgx.Conn, string, error) {
	cfg := h.pool.Config().ConnConfig.Copy()
	name := "kiln-events"
	if sp := cfg.RuntimeParams["search_path"]; sp != "" {
		name += " " + sp
	}
	cfg.RuntimeParams["application_name"] = name
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("events: connecting listener: %w", err)
	}
	schemaName, err := store.Listen(cctx, conn, Channel)
	if err != nil {
		closeConn(ctx, conn)
		return nil, "", fmt.Errorf("events: %w", err)
	}
	return conn, schemaName, nil
}

// closeConn closes the listener's connection, even once ctx has ended, but
// does not wait long for a peer that does not answer.
func closeConn(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}

// listen connects, then waits for notifications; on losing the connection
// it reconnects with backoff. After every connect it wakes every feed, since
// notifications may have been missed.
func (h *Hub) listen(ctx context.Context) {
	var conn *pgx.Conn
	var schemaName string
	delay := h.reconnectDelay
	for {
		if conn == nil {
			var err error
			conn, schemaName, err = h.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				h.logger.Warn("events listener cannot connect; retrying", "error", err, "in", delay)
				select {
				case <-ctx.Done():
					return
				case <-time.After(delay):
				}
				delay = min(delay*2, h.o.MaxReconnectDelay)
				continue
			}
			h.logger.Debug("events listener connected")
			h.wakeAll()
		}
		delay = h.reconnectDelay
		err := h.wait(ctx, conn, schemaName)
		closeConn(ctx, conn)
		conn = nil
		if ctx.Err() != nil {
			return
		}
		h.logger.Warn("events listener lost its connection; reconnecting", "error", err)
	}
}

func (h *Hub) wait(ctx context.Context, conn *pgx.Conn, schemaName string) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		sch, rest, ok := strings.Cut(n.Payload, " ")
		if !ok || sch != schemaName {
			continue
		}
		id, seqText, ok := strings.Cut(rest, " ")
		seq, err := strconv.ParseInt(seqText, 10, 64)
		if !ok || err != nil {
			continue
		}
		h.wakeBuild(id, seq)
	}
}

func (h *Hub) wakeBuild(id string, seq int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f := h.feeds[id]; f != nil && seq > f.cursor {
		f.poke()
	}
}

func (h *Hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.feeds {
		f.poke()
	}
}

func (f *feed) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Subscribe follows build id. The subscription starts in catch-up mode: the
// caller replays what it needs from the database with ListEvents, then calls
// Live. Events appended after Subscribe returned are delivered on C.
//
// Before Start it returns ErrNotStarted, after Stop ErrStopped.
func (h *Hub) Subscribe(ctx context.Context, id string) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started && !h.stopped {
		return nil, ErrNotStarted
	}
	for h.feeds[id] == nil && !h.stopped {
		// A new feed starts at the build's current sequence; everything up
		// to it is in the database for the subscriber's replay.
		h.mu.Unlock()
		seq, err := store.BuildEventSeq(ctx, h.pool, id)
		h.mu.Lock()
		if err != nil {
			return nil, err
		}
		if h.feeds[id] != nil || h.stopped {
			break // another subscriber started it meanwhile
		}
		f := &feed{id: id, wake: make(chan struct{}, 1), quit: make(chan struct{}), cursor: seq, subs: map[*Subscription]struct{}{}}
		h.feeds[id] = f
		fctx := h.ctx
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.run(fctx, f)
		}()
	}
	if h.stopped {
		return nil, ErrStopped
	}
	h.listenLocked()
	f := h.feeds[id]
	s := &Subscription{hub: h, feed: f, C: make(chan schema.Event, h.o.Buffer), Dropped: make(chan struct{}), catchingUp: true}
	f.subs[s] = struct{}{}
	return s, nil
}

// Live ends catch-up mode once the caller has replayed up to pos. It returns
// false when events were lost meanwhile (the buffer overflowed): the caller
// replays again from pos and calls Live again. Buffered events up to pos are
// discarded, so the buffer starts live with room.
func (s *Subscription) Live(pos int64) bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	var keep []schema.Event
	for n := len(s.C); n > 0; n-- {
		if e := <-s.C; e.Seq > pos {
			keep = append(keep, e)
		}
	}
	if s.lagged {
		s.lagged = false
		return false
	}
	for _, e := range keep {
		s.C <- e // C was just emptied and only this lock's holder sends
	}
	s.catchingUp = false
	return true
}

// Close leaves the feed; the last subscriber to leave stops it.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s)
}

func (h *Hub) removeLocked(s *Subscription) {
	if s.closed {
		return
	}
	s.closed = true
	f := s.feed
	delete(f.subs, s)
	if len(f.subs) == 0 && h.feeds[f.id] == f {
		delete(h.feeds, f.id)
		close(f.quit)
	}
}

// run reads the build's new events whenever woken and hands them out, until
// the feed's last subscriber leaves or ctx (the hub's) ends.
func (h *Hub) run(ctx context.Context, f *feed) {
	var tick <-chan time.Time
	if h.o.PollInterval > 0 {
		t := time.NewTicker(h.o.PollInterval)
		defer t.Stop()
		tick = t.C
	}
	// A read in flight ends when the last subscriber leaves, or at Stop.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		select {
		case <-f.quit:
		case <-ctx.Done():
		}
		cancel()
	}()
	for {
		select {
		case <-f.quit:
			return
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-tick:
		}
		if err := h.read(ctx, f); err != nil && ctx.Err() == nil {
			h.logger.Warn("reading build events", "build_id", f.id, "error", err)
			select { // a moment before trying again
			case <-f.quit:
				return
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			f.poke()
		}
	}
}

func (h *Hub) read(ctx context.Context, f *feed) error {
	h.mu.Lock()
	cursor := f.cursor
	h.mu.Unlock()
	for {
		evs, err := store.ListEvents(ctx, h.pool, f.id, cursor, h.o.PageSize)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		h.mu.Lock()
		for s := range f.subs {
			h.deliverLocked(s, evs)
		}
		cursor = evs[len(evs)-1].Seq
		f.cursor = cursor
		h.mu.Unlock()
		if len(evs) < h.o.PageSize {
			return nil
		}
	}
}

func (h *Hub) deliverLocked(s *Subscription, evs []schema.Event) {
	for _, e := range evs {
		select {
		case s.C <- e:
			continue
		default:
		}
		if s.catchingUp {
			s.lagged = true
			continue
		}
		h.removeLocked(s)
		close(s.Dropped)
		return
	}
}
