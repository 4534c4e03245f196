package events

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/httpserve"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// ListLimit is the most events one JSON page of GET /builds/{id}/events holds.
const ListLimit = 1000

// Handler serves a build's events: a JSON page, a Server-Sent Events stream
// or a WebSocket, with the same auth and scoping as the other build endpoints.
type Handler struct {
	Hub    *Hub            // required
	Intake *intake.Service // required: scopes the build to the request's principal
	Logger *slog.Logger    // default: discard
	// Heartbeat is how often an idle stream sends a comment (SSE) or a ping
	// (WebSocket). Default 15s.
	Heartbeat time.Duration
	// WriteTimeout bounds one write to a client. Default 30s.
	WriteTimeout time.Duration
	// Guard, if set, admits each stream (SSE or WebSocket) and re-checks it
	// at every heartbeat: a stream it refuses was answered by it; one whose
	// token it no longer finds valid ends (schema.SSEUnauthorized,
	// schema.CloseTokenInvalid). Default: every stream, never re-checked.
	Guard Guard
}

// Guard admits event streams (ratelimit.Streams is the dispatcher's). Admit
// answers w itself and returns ok false to refuse the stream; otherwise
// valid says, at each heartbeat, whether the stream's token still works,
// and release is called once when the stream ends.
type Guard interface {
	Admit(w http.ResponseWriter, r *http.Request) (valid func(context.Context) bool, release func(), ok bool)
}

// admit asks the Guard, if any, to admit the stream r opens.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (valid func(context.Context) bool, release func(), ok bool) {
	if h.Guard == nil {
		return func(context.Context) bool { return true }, func() {}, true
	}
	return h.Guard.Admit(w, r)
}

// Mount adds GET /builds/{taskId}/events and GET /builds/{taskId}/events/ws
// behind authed, the edge's authenticator.
func (h *Handler) Mount(r chi.Router, authed func(http.Handler) http.Handler) {
	r.With(authed).Get("/builds/{taskId}/events", h.events)
	r.With(authed).Get("/builds/{taskId}/events/ws", h.websocket)
}

// ServeEvents answers GET /builds/{taskId}/events (JSON, or SSE when the
// request accepts text/event-stream) wherever it is routed: the console
// serves it under its own authenticator. Who the request acts as must be
// set already (edge.Principal).
func (h *Handler) ServeEvents(w http.ResponseWriter, r *http.Request) { h.events(w, r) }

func (h *Handler) logger() *slog.Logger { return cmp.Or(h.Logger, slog.New(slog.DiscardHandler)) }

// build returns the build the request names if its principal may see it,
// or answers: 404 for an id that is not Kiln's or a build it may not see,
// 503 while the database is unreachable.
func (h *Handler) build(w http.ResponseWriter, r *http.Request) (*store.Build, bool) {
	p := edge.Principal(r.Context())
	if p == nil { // mounted without the authenticator: refuse, never serve
		edge.Write(w, r, edge.Errorf(http.StatusUnauthorized, "Authorization: a Bearer token is required"))
		return nil, false
	}
	id, ok := edge.PathID(r, "taskId")
	if !ok {
		edge.Write(w, r, edge.NoSuch("build", id))
		return nil, false
	}
	b, err := h.Intake.GetBuild(r.Context(), p, id)
	if err != nil {
		edge.Write(w, r, err)
		return nil, false
	}
	return b, true
}

// after reads where to resume: Last-Event-ID (sent by a reconnecting
// EventSource) wins over ?after=.
func after(r *http.Request) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	field := "Last-Event-ID"
	if v == "" {
		v, field = r.URL.Query().Get("after"), "after"
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, edge.Field(http.StatusUnprocessableEntity, field, "must be a non-negative integer")
	}
	return n, nil
}

// events answers GET /builds/{taskId}/events: JSON, or SSE when asked for.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	b, ok := h.build(w, r)
	if !ok {
		return
	}
	from, err := after(r)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		h.sse(w, r, b, from)
		return
	}
	evs, err := store.ListEvents(r.Context(), h.Hub.pool, b.ID, from, ListLimit)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"events": evs})
}

// sink is where follow writes: an SSE response or a WebSocket.
type sink interface {
	event(ctx context.Context, e schema.Event) error
	heartbeat(ctx context.Context) error
	end(ctx context.Context, status schema.Status, last int64) error
	dropped(ctx context.Context, last int64) error
	shutdown(ctx context.Context, last int64) error
	unauthorized(ctx context.Context, last int64) error
}

// terminalStatus returns the status a status event moved to, if terminal.
func terminalStatus(e schema.Event) (schema.Status, bool) {
	p, ok := schema.PayloadAs[schema.StatusPayload](e)
	if !ok || !p.Status.Terminal() {
		return "", false
	}
	return p.Status, true
}

// follow writes build b's events after pos to out: a replay from the
// database, then live events from the hub, until the build is terminal and
// its events are written, the client leaves, it falls behind, or (asked at
// each heartbeat) its token is no longer valid.
func (h *Handler) follow(ctx context.Context, b *store.Build, pos int64, out sink, valid func(context.Context) bool) error {
	var sub *Subscription
	if !b.Status.Terminal() {
		var err error
		if sub, err = h.Hub.Subscribe(ctx, b.ID); err != nil {
			return err
		}
		defer sub.Close()
	}
	for {
		st, err := h.replay(ctx, b.ID, &pos, out)
		if err != nil {
			return err
		}
		if st != "" {
			return out.end(ctx, st, pos)
		}
		if sub == nil {
			return out.end(ctx, b.Status, pos)
		}
		if sub.Live(pos) {
			break
		}
	}
	hb := time.NewTicker(cmp.Or(h.Heartbeat, DefaultHeartbeat))
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.Dropped:
			return out.dropped(ctx, pos)
		case <-h.Hub.done:
			return out.shutdown(ctx, pos)
		case <-hb.C:
			if !valid(ctx) {
				return out.unauthorized(ctx, pos)
			}
			if err := out.heartbeat(ctx); err != nil {
				return err
			}
		case e := <-sub.C:
			if e.Seq <= pos {
				continue
			}
			if e.Seq > pos+1 { // cannot happen while the feed works; mend from the database
				st, err := h.replay(ctx, b.ID, &pos, out)
				if err != nil {
					return err
				}
				if st != "" {
					return out.end(ctx, st, pos)
				}
				continue
			}
			if err := out.event(ctx, e); err != nil {
				return err
			}
			pos = e.Seq
			if st, ok := terminalStatus(e); ok {
				// Anything stored with the terminal status goes out too.
				if _, err := h.replay(ctx, b.ID, &pos, out); err != nil {
					return err
				}
				return out.end(ctx, st, pos)
			}
		}
	}
}

// replay writes the stored events after *pos, page by page, and returns the
// terminal status if it wrote the terminal status event.
func (h *Handler) replay(ctx context.Context, id string, pos *int64, out sink) (schema.Status, error) {
	var final schema.Status
	for {
		evs, err := store.ListEvents(ctx, h.Hub.pool, id, *pos, h.Hub.o.PageSize)
		if err != nil {
			return "", err
		}
		for _, e := range evs {
			if err := out.event(ctx, e); err != nil {
				return "", err
			}
			*pos = e.Seq
			if st, ok := terminalStatus(e); ok {
				final = st
			}
		}
		if len(evs) < h.Hub.o.PageSize {
			return final, nil
		}
	}
}

// sse streams Server-Sent Events: "id: <seq>", "event: <type>", "data: <Event JSON>".
// It ends with schema.SSEEnd once the build is terminal, or schema.SSEDropped
// when the client fell behind; both carry where to resume.
func (h *Handler) sse(w http.ResponseWriter, r *http.Request, b *store.Build, pos int64) {
	valid, release, ok := h.admit(w, r)
	if !ok {
		return
	}
	defer release()
	httpserve.Stream(w) // authenticated: a long-lived answer; each write below has its own deadline
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sseSink{w: w, rc: http.NewResponseController(w), timeout: cmp.Or(h.WriteTimeout, 30*time.Second)}
	if err := s.write("retry: 2000\n\n"); err != nil {
		return
	}
	if err := h.follow(r.Context(), b, pos, s, valid); err != nil && r.Context().Err() == nil {
		h.logger().InfoContext(r.Context(), "event stream ended", "build_id", b.ID, "error", err)
	}
}

type sseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (s *sseSink) write(text string) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := fmt.Fprint(s.w, text); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sseSink) event(_ context.Context, e schema.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return s.write(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, data))
}

func (s *sseSink) heartbeat(context.Context) error { return s.write(": heartbeat\n\n") }

func (s *sseSink) end(_ context.Context, st schema.Status, last int64) error {
	return s.control(schema.SSEEnd, schema.StreamEnd{Status: st, LastSeq: last})
}

// control writes one of the stream's own events (schema.SSEEnd, SSEDropped).
func (s *sseSink) control(name string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return s.write(fmt.Sprintf("event: %s\ndata: %s\n\n", name, b))
}

// shutdown ends the response; the client's EventSource reconnects with
// Last-Event-ID, to another replica.
func (s *sseSink) shutdown(context.Context, int64) error { return nil }

func (s *sseSink) dropped(_ context.Context, last int64) error {
	return s.control(schema.SSEDropped, schema.StreamDropped{Reason: "slow consumer", ResumeAfter: last})
}

func (s *sseSink) unauthorized(_ context.Context, last int64) error {
	return s.control(schema.SSEUnauthorized, schema.StreamDropped{Reason: "the token is no longer valid", ResumeAfter: last})
}

// websocket answers GET /builds/{taskId}/events/ws: one JSON Event per text
// message, replayed from ?after= and then live, closed with one of schema's
// close codes: CloseBuildEnded once the build is terminal, CloseSlowConsumer
// when the client fell behind, CloseGoingAway at shutdown. The close reason
// is for people; a client resumes from the last event it received.
func (h *Handler) websocket(w http.ResponseWriter, r *http.Request) {
	b, ok := h.build(w, r)
	if !ok {
		return
	}
	pos, err := after(r)
	if err != nil {
		edge.Write(w, r, err)
		return
	}
	valid, release, ok := h.admit(w, r)
	if !ok {
		return
	}
	defer release()
	httpserve.Stream(w) // authenticated: a long-lived answer; each write below has its own deadline
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context())
	s := &wsSink{c: c, timeout: cmp.Or(h.WriteTimeout, 30*time.Second)}
	if err := h.follow(ctx, b, pos, s, valid); err != nil && ctx.Err() == nil {
		h.logger().InfoContext(r.Context(), "event socket ended", "build_id", b.ID, "error", err)
		_ = c.Close(schema.CloseInternalError, "internal error")
	}
}

type wsSink struct {
	c       *websocket.Conn
	timeout time.Duration
}

func (s *wsSink) event(ctx context.Context, e schema.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.c.Write(ctx, websocket.MessageText, data)
}

func (s *wsSink) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.c.Ping(ctx)
}

func (s *wsSink) end(_ context.Context, st schema.Status, _ int64) error {
	return s.c.Close(schema.CloseBuildEnded, "build "+string(st))
}

func (s *wsSink) shutdown(_ context.Context, last int64) error {
	return s.c.Close(schema.CloseGoingAway, fmt.Sprintf("server shutting down; resume from seq %d", last))
}

func (s *wsSink) dropped(_ context.Context, last int64) error {
	return s.c.Close(schema.CloseSlowConsumer, fmt.Sprintf("slow consumer; resume from seq %d", last))
}

func (s *wsSink) unauthorized(context.Context, int64) error {
	return s.c.Close(schema.CloseTokenInvalid, "the token is no longer valid")
}
