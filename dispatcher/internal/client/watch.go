package client

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	Show      func(schema.Event)  // called once per event, in order
	Notice    func(string)        // reconnects and drops; may be nil
	Idle      time.Duration       // reconnect when nothing (not even a heartbeat) came for this long; default 45s
	MaxDelay  time.Duration       // reconnect backoff cap; default 5s
	Sleep     func(time.Duration) // for tests; default: wait, or until ctx ends
}

// errDropped means the server dropped this client for falling behind.
var errDropped = errors.New("dropped by the server as a slow consumer")

// Watch follows a build's events until the build is terminal and returns
// its final status. It reconnects after disconnects, drops and server
// restarts, resuming after the last event shown, so no event is shown twice
// or skipped. Answers 4xx other than 429 end it with an *APIError.
func (c *Client) Watch(ctx context.Context, id string, o WatchOptions) (schema.Status, error) {
	last := o.After
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
			case "end":
				var end struct {
					Status schema.Status `json:"status"`
				}
				if err := json.Unmarshal([]byte(data), &end); err != nil || !end.Status.Terminal() {
					return "", fmt.Errorf("unreadable end of stream: %s", data)
				}
				return end.Status, nil
			case "dropped":
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
	var final schema.Status
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
			case websocket.StatusNormalClosure:
				if st, ok := strings.CutPrefix(ce.Reason, "build "); ok && schema.Status(st).Terminal() {
					return schema.Status(st), nil
				}
				if final != "" {
					return final, nil
				}
				return "", errStreamEnded
			case 4000: // slow consumer
				return "", errDropped
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
			if st := statusOf(e); st.Terminal() {
				final = st
			}
		}
	}
}

// statusOf returns the status a status event moved to.
func statusOf(e schema.Event) schema.Status {
	if e.Type != schema.EventStatus {
		return ""
	}
	var p struct {
		Status schema.Status `json:"status"`
	}
	_ = json.Unmarshal(e.Payload, &p)
	return p.Status
}

// Progress prints one compact line per event: time since the first event,
// sequence number, type and a one-line summary.
type Progress struct {
	W     io.Writer
	Width int // summary width; default 100
	first time.Time
}

// Show implements WatchOptions.Show.
func (p *Progress) Show(e schema.Event) {
	if p.first.IsZero() {
		p.first = e.Time
	}
	el := e.Time.Sub(p.first).Round(100 * time.Millisecond)
	fmt.Fprintf(p.W, "%8s #%-5d %-11s %s\n", el, e.Seq, e.Type, clip(Summary(e), cmp.Or(p.Width, 100)))
}

// Summary renders an event's payload on one line.
func Summary(e schema.Event) string {
	var m map[string]any
	_ = json.Unmarshal(e.Payload, &m)
	str := func(k string) string { s, _ := m[k].(string); return s }
	num := func(k string) float64 { f, _ := m[k].(float64); return f }
	switch e.Type {
	case schema.EventStatus:
		if s := str("error"); s != "" {
			return str("status") + ": " + s
		}
		return str("status")
	case schema.EventAgentText:
		return str("text")
	case schema.EventToolCall:
		return strings.TrimSpace(str("name") + " " + str("input"))
	case schema.EventToolResult:
		if b, _ := m["is_error"].(bool); b {
			return "error: " + str("summary")
		}
		return str("summary")
	case schema.EventUsage:
		return fmt.Sprintf("%.0f in / %.0f out tokens, %.0f turns, $%.4f",
			num("input_tokens"), num("output_tokens"), num("turns"), num("cost_usd"))
	case schema.EventGit:
		if s := str("error"); s != "" {
			return "error: " + s
		}
		files, _ := m["files_changed"].([]any)
		out := fmt.Sprintf("%d files changed", len(files))
		if sha := str("commit_sha"); sha != "" {
			out += ", commit " + sha[:min(len(sha), 12)]
		}
		if b, _ := m["pushed"].(bool); b {
			out += ", pushed"
		}
		return out
	case schema.EventLog:
		if l := str("level"); l != "" {
			return "[" + l + "] " + str("message")
		}
		return str("message")
	case schema.EventInfo:
		return str("message")
	}
	return string(e.Payload)
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
