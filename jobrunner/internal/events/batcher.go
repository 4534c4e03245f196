package events

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kilnbuild/kiln/jobrunner/internal/client"
	"github.com/kilnbuild/kiln/schema"
)

// Poster posts one batch; *client.Client implements it. It retries
// transient failures itself until ctx ends.
type Poster interface {
	PostEvents(ctx context.Context, b schema.EventBatch) (schema.EventBatchAck, error)
}

// Options configure a Batcher.
type Options struct {
	// MaxEvents caps the events of one batch. Default 100.
	MaxEvents int
	// MaxBytes caps the payload bytes of one batch (an event larger than
	// that travels alone). Default 512 KiB.
	MaxBytes int
	// Interval is how long events wait for company before they are posted. Default 250ms.
	Interval time.Duration
	// MaxQueued bounds the events waiting while the dispatcher is
	// unreachable; beyond it new events are dropped (and counted). Default 20000.
	MaxQueued int
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Batcher collects events and posts them in order. Add and Close may be
// called from any goroutine.
type Batcher struct {
	p    Poster
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	queue    []schema.EventInput
	closing  bool
	dropped  int
	status   schema.Status
	disabled error
	posted   int64 // batches acknowledged

	wake     chan struct{}
	terminal chan struct{}
	termOnce sync.Once
	done     chan struct{}
	postCtx  context.Context
	abort    context.CancelFunc
}

// Start starts posting in the background. Events are posted until Close or
// Abort; ctx's values (not its cancellation) carry into the posts.
func Start(ctx context.Context, p Poster, o Options) *Batcher {
	o.MaxEvents = cmp.Or(o.MaxEvents, 100)
	o.MaxBytes = cmp.Or(o.MaxBytes, 512<<10)
	o.Interval = cmp.Or(o.Interval, 250*time.Millisecond)
	o.MaxQueued = cmp.Or(o.MaxQueued, 20000)
	postCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	b := &Batcher{
		p: p, opts: o, log: cmp.Or(o.Logger, slog.Default()).With("component", "events"),
		wake: make(chan struct{}, 1), terminal: make(chan struct{}), done: make(chan struct{}),
		postCtx: postCtx, abort: abort,
	}
	go b.loop()
	return b
}

// Add queues an event.
func (b *Batcher) Add(e schema.EventInput) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b.mu.Lock()
	switch {
	case b.closing || b.disabled != nil:
		b.dropped++
	case len(b.queue) >= b.opts.MaxQueued:
		b.dropped++
	default:
		b.queue = append(b.queue, e)
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Terminal is closed when the dispatcher said the build is terminal (an
// acknowledgement with a terminal status, or a 409). A 409 also ends
// posting: the events queued and added later are dropped.
func (b *Batcher) Terminal() <-chan struct{} { return b.terminal }

// Status is the build status of the latest acknowledgement.
func (b *Batcher) Status() schema.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

// Stats reports the batches acknowledged and the events dropped.
func (b *Batcher) Stats() (batches int64, dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.posted, b.dropped
}

// Close stops taking events, posts the ones queued and returns when all are
// acknowledged, or when ctx ends (the post in flight is abandoned). It
// returns an error when events were left unposted.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		b.abort()
		<-b.done
	}
	b.abort()
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.queue) + b.dropped; n > 0 {
		return fmt.Errorf("%d events not posted", n)
	}
	return nil
}

func (b *Batcher) loop() {
	defer close(b.done)
	var batchNo int64 = 1
	for {
		b.mu.Lock()
		n, closing := len(b.queue), b.closing
		b.mu.Unlock()
		if n == 0 && closing {
			return
		}
		if n == 0 {
			select {
			case <-b.wake:
			case <-b.postCtx.Done():
				return
			}
			continue
		}
		if !closing && n < b.opts.MaxEvents {
			// Linger up to Interval for company, unless the batch fills or we close.
			linger := time.NewTimer(b.opts.Interval)
			for waiting := true; waiting; {
				select {
				case <-linger.C:
					waiting = false
				case <-b.wake:
					b.mu.Lock()
					waiting = !b.closing && len(b.queue) < b.opts.MaxEvents
					b.mu.Unlock()
				case <-b.postCtx.Done():
					linger.Stop()
					return
				}
			}
			linger.Stop()
		}
		if b.postCtx.Err() != nil {
			return
		}
		b.mu.Lock()
		events := b.take()
		b.mu.Unlock()
		if len(events) == 0 {
			continue
		}
		ack, err := b.p.PostEvents(b.postCtx, schema.EventBatch{Batch: batchNo, Events: events})
		switch {
		case err == nil:
			b.mu.Lock()
			b.queue = b.queue[len(events):]
			b.posted++
			b.status = ack.Status
			b.mu.Unlock()
			batchNo++
			if ack.Status.Terminal() {
				b.markTerminal(ack.Status)
			}
		case errors.Is(err, client.ErrBuildTerminal):
			// Final: the build ended; nothing more is posted or retried.
			b.markTerminal("")
			b.disable(err)
			return
		case errors.Is(err, client.ErrCapReached):
			// Final for events: every later batch would be refused the same
			// way. The build goes on and still reports its result.
			b.log.Warn("the build reached its event cap at the dispatcher; no more events are posted", "batch", batchNo, "err", err)
			b.disable(err)
			return
		case errors.Is(err, client.ErrRejected):
			// Not worth retrying as it is. The number was not stored, so it is reused.
			b.log.Error("dispatcher refused an event batch; dropping it", "batch", batchNo, "events", len(events), "err", err)
			b.mu.Lock()
			b.queue = b.queue[len(events):]
			b.dropped += len(events)
			b.mu.Unlock()
			var he *client.HTTPError
			if errors.As(err, &he) && (he.StatusCode == 401 || he.StatusCode == 403 || he.StatusCode == 404) {
				b.disable(err)
				return
			}
		default:
			// The poster retries until postCtx ends: we are being aborted.
			b.log.Warn("posting events stopped", "batch", batchNo, "err", err)
			return
		}
	}
}

// take returns the head of the queue that forms the next batch. Called with b.mu held.
func (b *Batcher) take() []schema.EventInput {
	size := 0
	for i, e := range b.queue {
		if i >= b.opts.MaxEvents || (i > 0 && size+len(e.Payload) > b.opts.MaxBytes) {
			return b.queue[:i:i]
		}
		size += len(e.Payload)
	}
	return b.queue[:len(b.queue):len(b.queue)]
}

func (b *Batcher) markTerminal(s schema.Status) {
	b.mu.Lock()
	if s != "" {
		b.status = s
	}
	b.mu.Unlock()
	b.termOnce.Do(func() {
		b.log.Info("dispatcher says the build is terminal", "status", s)
		close(b.terminal)
	})
}

func (b *Batcher) disable(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.disabled = err
	b.dropped += len(b.queue)
	b.queue = nil
}
