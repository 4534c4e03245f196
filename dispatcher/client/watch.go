package client

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/kilnbuild/kiln/schema"
)

// WatchOptions configures Watch.
type WatchOptions struct {
	After     int64               // resume after this sequence number
	WebSocket bool                // follow over the WebSocket instead of SSE
	Show      func(schema.Event)  // called once per event, in order; may be nil
	Notice    func(string)        // reconnects and drops; may be nil
	Idle      time.Duration       // reconnect when nothing (not even a heartbeat) came for this long; default 45s
	MaxDelay  time.Duration       // reconnect backoff cap; default 5s
	Sleep     func(time.Duration) // for tests; default: wait, or until ctx ends
}

var (
	// errDropped means the server dropped this client for falling behind.
	errDropped = errors.New("dropped by the server as a slow consumer")
	// errStreamEnded means the stream closed without saying the build ended.
	errStreamEnded = errors.New("event stream closed")
	// errBuildEnded means the WebSocket closed with schema.CloseBuildEnded.
	errBuildEnded = errors.New("the build ended")
)

// Watch follows a build's events until the build is terminal and returns
// its final status. It reconnects after disconnects, drops and server
// restarts, resuming after the last event shown, so no event is shown twice
// or skipped. The final status comes from the build's terminal status event
// (or, when After was past it, from the build itself), never from the
// stream's close reason. Answers 4xx other than 429 end it with an *APIError.
func (c *Client) Watch(ctx context.Context, id string, o WatchOptions) (schema.Status, error) {
	last := o.After
	// The final status is the terminal status event's: Watch knows it from
	// the events it showed, never from a close reason.
	var final schema.Status
	show := o.Show
	o.Show = func(e schema.Event) {
		if p, ok := schema.PayloadAs[schema.StatusPayload](e); ok && p.Status.Terminal() {
			final = p.Status
		}
		if show != nil {
			show(e)
		}
	}
	delay := 250 * time.Millisecond
	sleep := o.Sleep
	if sleep == nil {
		sleep = func(d time.Duration) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}
	for {
		before := last
		var st schema.Status
		var err error
		if o.WebSocket {
			st, err = c.wsOnce(ctx, id, &last, o)
		} else {
			st, err = c.sseOnce(ctx, id, &last, o)
		}
		if st != "" {
			return st, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if errors.Is(err, errBuildEnded) {
			if final != "" {
				return final, nil
			}
			// Started after the terminal status event: the build says it.
			b, gerr := c.Get(ctx, id)
			if gerr == nil && b.Status.Terminal() {
				return b.Status, nil
			}
			err = errors.Join(err, gerr)
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return "", err
		}
		if last > before || errors.Is(err, errDropped) {
			delay = 250 * time.Millisecond
		}
		if o.Notice != nil {
			o.Notice(fmt.Sprintf("reconnecting after event %d: %v", last, err))
		}
		if !errors.Is(err, errDropped) {
			sleep(delay)
			delay = min(delay*2, cmp.Or(o.MaxDelay, 5*time.Second))
		}
	}
}

// idleTimer cancels a stream when nothing arrived for a while.
type idleTimer struct {
	mu sync.Mutex
	t  *time.Timer
	d  time.Duration
}

func (i *idleTimer) reset() {
	i.mu.Lock()
	i.t.Reset(i.d)
	i.mu.Unlock()
}

func (c *Client) sseOnce(ctx context.Context, id string, last *int64, o WatchOptions) (schema.Status, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := &idleTimer{d: cmp.Or(o.Idle, 45*time.Second)}
	idle.t = time.AfterFunc(idle.d, cancel)
	defer idle.t.Stop()

	req, err := c.newRequest(ctx, http.MethodGet, "/builds/"+url.PathEscape(id)+"/events", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(*last, 10))
	}
	hc := *c.httpClient()
	hc.Timeout = 0 // a stream lasts as long as the build
	res, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", apiError(res)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var event, data string
	for sc.Scan() {
		idle.reset()
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(line[len("event:"):])
		case strings.HasPrefix(line, "data:"):
			data = strings.TrimSpace(line[len("data:"):])
		case line == "" && data != "":
			switch event {
			case schema.SSEEnd:
				var end schema.StreamEnd
				if err := json.Unmarshal([]byte(data), &end); err != nil || !end.Status.Terminal() {
					return "", fmt.Errorf("unreadable end of stream: %s", data)
				}
				return end.Status, nil
			case schema.SSEDropped:
				return "", errDropped
			default:
				var e schema.Event
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					return "", fmt.Errorf("unreadable event: %w", err)
				}
				if e.Seq > *last {
					o.Show(e)
					*last = e.Seq
				}
			}
			event, data = "", ""
		}
	}
	return "", cmp.Or(sc.Err(), errStreamEnded)
}

func (c *Client) wsOnce(ctx context.Context, id string, last *int64, o WatchOptions) (schema.Status, error) {
	u := strings.TrimRight(c.BaseURL, "/") + "/builds/" + url.PathEscape(id) + "/events/ws?after=" + strconv.FormatInt(*last, 10)
	u = "ws" + strings.TrimPrefix(u, "http")
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, res, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.Token}, "User-Agent": {"kiln-client/1"}}})
	cancel()
	if err != nil {
		if res != nil && res.StatusCode != http.StatusSwitchingProtocols {
			return "", apiError(res)
		}
		return "", err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(8 << 20)
	idle := cmp.Or(o.Idle, 45*time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, idle)
		_, b, err := conn.Read(rctx)
		cancel()
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				return "", err
			}
			switch ce.Code {
			case schema.CloseBuildEnded:
				return "", errBuildEnded
			case schema.CloseSlowConsumer:
				return "", errDropped
			case schema.CloseGoingAway:
				return "", fmt.Errorf("the server is shutting down: %w", errStreamEnded)
			default:
				return "", fmt.Errorf("connection closed: %d %s", ce.Code, ce.Reason)
			}
		}
		var e schema.Event
		if err := json.Unmarshal(b, &e); err != nil {
			return "", fmt.Errorf("unreadable event: %w", err)
		}
		if e.Seq > *last {
			o.Show(e)
			*last = e.Seq
		}
	}
}

// ErrEnded is what Wait returns when the build ended in a status it was not
// waiting for (the build is returned too).
var ErrEnded = errors.New("build ended")

// Wait waits until a build's status is one of want (any terminal status when
// want is empty) and returns the build as GET /builds/{id} answers then. It
// follows the build's event stream, as Watch does, and reads the build again
// at each status event that may be the one, so it sees a status however
// briefly the build held it; a build already there returns at once. A
// build that ends in another terminal status returns it with ErrEnded. A
// ctx that ends first returns its error.
func (c *Client) Wait(ctx context.Context, id string, want ...schema.Status) (*schema.Build, error) {
	if len(want) == 0 {
		want = []schema.Status{schema.StatusCompleted, schema.StatusFailed, schema.StatusCancelled}
	}
	var b *schema.Build
	var err error
	// check reads the build and reports whether Wait is over.
	check := func() bool {
		b, err = c.Get(ctx, id)
		switch {
		case err != nil:
			b = nil
			return true
		case slices.Contains(want, b.Status):
			return true
		case b.Status.Terminal():
			err = fmt.Errorf("build %s is %s, not %v: %w", id, b.Status, want, ErrEnded)
			return true
		}
		return false
	}
	if check() {
		return b, err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	done := false
	_, werr := c.Watch(wctx, id, WatchOptions{Show: func(e schema.Event) {
		p, ok := schema.PayloadAs[schema.StatusPayload](e)
		if done || !ok || !slices.Contains(want, p.Status) && !p.Status.Terminal() {
			return
		}
		if check() {
			done = true
			stop()
		}
	}})
	switch {
	case done:
		return b, err
	case werr != nil:
		return nil, werr
	}
	check() // Watch saw the build end
	return b, err
}
