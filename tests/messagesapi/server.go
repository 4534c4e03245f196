package messagesapi

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Request is one request the server got, as Requests reports it.
type Request struct {
	Time   time.Time
	Method string
	Path   string
	// Kind is "turn" (an agent conversation's turn), "count_tokens", "side"
	// (a message request that offers no tools) or "unknown" (answered 404).
	Kind string
	// Status is the HTTP status sent; 0 when the client went away first.
	Status int
	Model  string
	Stream bool
	// Conversation numbers agent conversations from 1 in the order they
	// started; 0 for requests outside one.
	Conversation int
	// Script is the name of the conversation's script; "" when none was
	// queued for it.
	Script string
	// Turn is the conversation's turn index: the assistant messages in the
	// request after the run's prompt (so a resumed conversation's first
	// request is turn 0 too); Attempt counts earlier requests for the same
	// turn (retries).
	Turn    int
	Attempt int
	// Earlier counts the assistant messages before the run's prompt: 0 for
	// a fresh run, more when the CLI resumed an earlier session (--resume),
	// whose conversation the request carries.
	Earlier int
	// Missing lists the texts of the Turn's Expect that the request's
	// conversation lacked; the request was then refused with a 400.
	Missing []string
	// SessionID is the CLI's X-Claude-Code-Session-Id.
	SessionID string
	// Prompt is the last text block of the run's prompt message: the first
	// message of a fresh run (the CLI puts the user's prompt there, after its
	// own system reminders), the last user message that holds no tool result
	// of a resumed one.
	Prompt string
	// ToolResults are the tool_result blocks of the last user message
	// (system messages the CLI adds after it aside).
	ToolResults []ToolResult
	// Dropped says the connection was dropped mid-answer (Turn.DropAfter);
	// Stalled that the answer was held back (Turn.Stall).
	Dropped bool
	Stalled bool
	// InFlight says the request is still being answered (or stalled): its
	// Status and Dropped are not final yet.
	InFlight bool
}

// ToolResult is a tool_result block the CLI sent back.
type ToolResult struct {
	ToolUseID string
	Content   string
	IsError   bool
}

// Option configures a Server.
type Option func(*Server)

// OnRequest has log called with each Request once it has been answered
// (from the request's goroutine; log must be safe for concurrent use).
func OnRequest(log func(Request)) Option {
	return func(s *Server) { s.log = log }
}

// Server is the stand-in Messages API. Its methods are safe for concurrent
// use; it is an http.Handler too.
type Server struct {
	log func(Request)

	mu       sync.Mutex
	queue    []Script
	convs    map[string]*conversation
	requests []Request
	seq      int

	done      chan struct{}
	closeOnce sync.Once
	hs        *http.Server
	url       string
	served    chan struct{}
}

type conversation struct {
	n        int
	script   *Script
	attempts map[int]int
}

// New returns a Server that is not listening yet (see Listen), or that
// serves as an http.Handler.
func New(opts ...Option) *Server {
	s := &Server{convs: map[string]*conversation{}, done: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Start returns a Server listening on a free port of 127.0.0.1, closed when
// the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := New(opts...)
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatalf("messagesapi: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Listen starts serving on addr (host:port; port 0 picks a free one).
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	s.mu.Lock()
	if s.hs != nil {
		s.mu.Unlock()
		ln.Close()
		return errors.New("listen: already listening")
	}
	s.hs = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.url = "http://" + ln.Addr().String()
	s.served = make(chan struct{})
	hs, served := s.hs, s.served
	s.mu.Unlock()
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	return nil
}

// URL is the base URL to give the CLI (ANTHROPIC_BASE_URL), such as
// http://127.0.0.1:40123; "" before Listen.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close stops the server, ending stalled answers and open connections.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
	s.mu.Lock()
	hs, served := s.hs, s.served
	s.mu.Unlock()
	if hs != nil {
		_ = hs.Close()
		<-served
	}
}

// Enqueue queues scripts: each new agent conversation takes the next one,
// first in, first out. An invalid script is a programmer error and panics.
func (s *Server) Enqueue(scripts ...Script) {
	for _, sc := range scripts {
		if err := sc.Validate(); err != nil {
			panic("messagesapi: " + err.Error())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, scripts...)
}

// Requests returns the requests so far, in arrival order, including those
// still being answered (InFlight: a stalled one shows Stalled at once).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := Request{Time: time.Now(), Method: r.Method, Path: r.URL.Path, InFlight: true}
	idx := s.publish(-1, rec)
	defer func() {
		rec.InFlight = false
		s.publish(idx, rec)
		if s.log != nil {
			s.log(rec)
		}
	}()
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodPost && path == "/v1/messages":
		s.messages(w, r, idx, &rec)
	case r.Method == http.MethodPost && path == "/v1/messages/count_tokens":
		rec.Kind = "count_tokens"
		b, _ := io.ReadAll(r.Body)
		rec.Status = http.StatusOK
		writeJSON(w, http.StatusOK, map[string]int{"input_tokens": len(b)/4 + 1})
	default:
		rec.Kind = "unknown"
		rec.Status = http.StatusNotFound
		writeError(w, &APIError{Status: http.StatusNotFound, Message: fmt.Sprintf("stand-in Messages API: no %s %s", r.Method, r.URL.Path)}, "")
	}
}

// publish stores rec as request idx (a new one when idx < 0) and returns its index.
func (s *Server) publish(idx int, rec Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx < 0 {
		s.requests = append(s.requests, rec)
		return len(s.requests) - 1
	}
	s.requests[idx] = rec
	return idx
}

// messagesRequest is the part of a Messages API request the server reads.
type messagesRequest struct {
	Model    string            `json:"model"`
	Stream   bool              `json:"stream"`
	Tools    []json.RawMessage `json:"tools"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Metadata struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request, idx int, rec *Request) {
	var req messagesRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		rec.Kind, rec.Status = "unknown", http.StatusBadRequest
		writeError(w, &APIError{Status: http.StatusBadRequest, Message: "request body: " + err.Error()}, "")
		return
	}
	rec.Model, rec.Stream = req.Model, req.Stream
	rec.SessionID = sessionID(r, &req)
	run := runOf(&req)
	if len(req.Messages) > 0 {
		rec.Prompt = lastText(req.Messages[run.prompt].Content)
		// The last user message: the CLI may put system messages after it
		// (with --max-budget-usd, "USD budget: $0.0056/$5; …").
		for i := len(req.Messages) - 1; i >= 0; i-- {
			if m := req.Messages[i]; m.Role == "user" {
				rec.ToolResults = toolResults(m.Content)
				break
			}
			if req.Messages[i].Role == "assistant" {
				break
			}
		}
	}
	model := cmp.Or(req.Model, "claude-stand-in")
	if len(req.Tools) == 0 {
		rec.Kind, rec.Status = "side", http.StatusOK
		s.answer(w, r, rec, model, "msg_stand_in_side_"+s.nextSeq(), Turn{Text: "Stand-in answer."}, "")
		return
	}
	rec.Kind = "turn"
	rec.Turn, rec.Earlier = run.turn, run.earlier
	turn := s.turn(rec, conversationKey(rec.SessionID, &req, run))
	id := fmt.Sprintf("msg_stand_in_%d_%d_%d", rec.Conversation, rec.Turn, rec.Attempt)
	faulty := turn.Times == 0 || rec.Attempt < turn.Times
	if turn.Stall > 0 && faulty {
		rec.Stalled = true
		s.publish(idx, *rec)
		t := time.NewTimer(turn.Stall)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
	if rec.Missing = missingTexts(&req, turn.Expect); len(rec.Missing) > 0 {
		rec.Status = http.StatusBadRequest
		writeError(w, &APIError{Status: http.StatusBadRequest, Message: expectMessage(rec.Missing)}, "req_stand_in_"+s.nextSeq())
		return
	}
	if e := turn.Error; e != nil && (e.Times == 0 || rec.Attempt < e.Times) {
		rec.Status = e.Status
		writeError(w, e, "req_stand_in_"+s.nextSeq())
		return
	}
	rec.Status = http.StatusOK
	drop := ""
	if faulty {
		drop = turn.DropAfter
	}
	if s.answer(w, r, rec, model, id, turn, drop) {
		rec.Dropped = true
		// Ends the connection without finishing the response.
		panic(http.ErrAbortHandler)
	}
}

// turn finds the request's conversation (starting it with the next queued
// script when it is new) and the Turn that answers it, filling rec.
func (s *Server) turn(rec *Request, key string) Turn {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.convs[key]
	if !ok {
		c = &conversation{n: len(s.convs) + 1, attempts: map[int]int{}}
		if len(s.queue) > 0 {
			sc := s.queue[0]
			s.queue = s.queue[1:]
			c.script = &sc
		}
		s.convs[key] = c
	}
	rec.Conversation = c.n
	rec.Attempt = c.attempts[rec.Turn]
	c.attempts[rec.Turn]++
	if c.script == nil {
		return Turn{Text: "done"}
	}
	rec.Script = c.script.Name
	if rec.Turn >= len(c.script.Turns) {
		return Turn{Text: "done"}
	}
	return c.script.Turns[rec.Turn]
}

func (s *Server) nextSeq() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return strconv.Itoa(s.seq)
}

// block is a content block of an answer.
type block struct {
	Type  string         `json:"type"`
	Text  *string        `json:"text,omitempty"`
	ID    string         `json:"id,omitempty"`
	Name  string         `json:"name,omitempty"`
	Input map[string]any `json:"input,omitempty"`
}

// answer writes turn as the model's message, streamed when the request
// asked for it. It reports true when it stopped after the event named drop,
// so the caller drops the connection.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, rec *Request, model, id string, turn Turn, drop string) bool {
	var blocks []block
	if turn.Text != "" || len(turn.Tools) == 0 {
		text := cmp.Or(turn.Text, "done")
		blocks = append(blocks, block{Type: "text", Text: &text})
	}
	for i, tu := range turn.Tools {
		input := tu.Input
		if input == nil {
			input = map[string]any{}
		}
		blocks = append(blocks, block{Type: "tool_use", ID: fmt.Sprintf("toolu_stand_in_%d_%d_%d_%d", rec.Conversation, rec.Turn, rec.Attempt, i), Name: tu.Name, Input: input})
	}
	stop := "end_turn"
	if len(turn.Tools) > 0 {
		stop = "tool_use"
	}
	u := turn.Usage
	if u == (Usage{}) {
		u = Usage{InputTokens: 100, OutputTokens: 10}
	}
	usage := map[string]int{
		"input_tokens":                u.InputTokens,
		"output_tokens":               u.OutputTokens,
		"cache_creation_input_tokens": u.CacheCreationInputTokens,
		"cache_read_input_tokens":     u.CacheReadInputTokens,
	}
	if !rec.Stream {
		if drop != "" {
			return true
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "type": "message", "role": "assistant", "model": model,
			"content": blocks, "stop_reason": stop, "stop_sequence": nil, "usage": usage,
		})
		return false
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("request-id", "req_stand_in_"+s.nextSeq())
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	dropped := false
	send := func(event string, data any) bool {
		if dropped {
			return true
		}
		b, _ := json.Marshal(data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		if flusher != nil {
			flusher.Flush()
		}
		dropped = event == drop
		return dropped
	}
	startUsage := map[string]int{
		"input_tokens":                u.InputTokens,
		"cache_creation_input_tokens": u.CacheCreationInputTokens,
		"cache_read_input_tokens":     u.CacheReadInputTokens,
		"output_tokens":               min(1, u.OutputTokens),
	}
	send("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": id, "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": startUsage,
	}})
	send("ping", map[string]string{"type": "ping"})
	for i, b := range blocks {
		if b.Type == "text" {
			send("content_block_start", map[string]any{"type": "content_block_start", "index": i,
				"content_block": map[string]any{"type": "text", "text": ""}})
			for _, piece := range pieces(*b.Text) {
				send("content_block_delta", map[string]any{"type": "content_block_delta", "index": i,
					"delta": map[string]string{"type": "text_delta", "text": piece}})
			}
		} else {
			send("content_block_start", map[string]any{"type": "content_block_start", "index": i,
				"content_block": map[string]any{"type": "tool_use", "id": b.ID, "name": b.Name, "input": map[string]any{}}})
			js, _ := json.Marshal(b.Input)
			for _, piece := range append([]string{""}, pieces(string(js))...) {
				send("content_block_delta", map[string]any{"type": "content_block_delta", "index": i,
					"delta": map[string]string{"type": "input_json_delta", "partial_json": piece}})
			}
		}
		send("content_block_stop", map[string]any{"type": "content_block_stop", "index": i})
	}
	send("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
		"usage": map[string]int{"output_tokens": u.OutputTokens}})
	return send("message_stop", map[string]string{"type": "message_stop"})
}

// pieces splits s into a few chunks at rune boundaries, as the API streams
// text and partial JSON.
func pieces(s string) []string {
	size := max(16, len(s)/8)
	var out []string
	for len(s) > size {
		n := size
		for n < len(s) && !isRuneStart(s[n]) {
			n++
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, e *APIError, requestID string) {
	if requestID != "" {
		w.Header().Set("request-id", requestID)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("retry-after", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, map[string]any{
		"type":  "error",
		"error": map[string]string{"type": e.errorType(), "message": e.message()},
	})
}

// sessionID is the CLI's session: its header, or the session_id inside
// metadata.user_id (a JSON string).
func sessionID(r *http.Request, req *messagesRequest) string {
	if id := r.Header.Get("X-Claude-Code-Session-Id"); id != "" {
		return id
	}
	var meta struct {
		SessionID string `json:"session_id"`
	}
	if json.Unmarshal([]byte(req.Metadata.UserID), &meta) == nil {
		return meta.SessionID
	}
	return ""
}

// conversationKey tells conversations apart: by session, or by the first
// message when a client sends no session; and by the run's prompt, so a
// CLI run that resumes a session (the same session id, the earlier
// conversation in its requests, a new prompt) is a conversation of its own
// and takes the next script.
func conversationKey(session string, req *messagesRequest, run runInfo) string {
	h := sha256.New()
	if len(req.Messages) > 0 {
		for _, b := range readBlocks(req.Messages[run.prompt].Content) {
			h.Write([]byte(b.Text))
			h.Write([]byte{0})
		}
	}
	key := fmt.Sprintf("run:%d:%s", run.earlier, hex.EncodeToString(h.Sum(nil)))
	if session != "" {
		return "session:" + session + ":" + key
	}
	h = sha256.New()
	if len(req.Messages) > 0 {
		h.Write(req.Messages[0].Content)
	}
	return "first:" + hex.EncodeToString(h.Sum(nil)) + ":" + key
}

// runInfo places a request in its CLI run: prompt is the index of the
// run's prompt message (the last user message without a tool result),
// earlier the assistant messages before it, turn those after it.
type runInfo struct {
	prompt, earlier, turn int
}

func runOf(req *messagesRequest) runInfo {
	var run runInfo
	for i, m := range req.Messages {
		if m.Role == "user" && isPrompt(m.Content) {
			run.prompt = i
		}
	}
	for i, m := range req.Messages {
		if m.Role != "assistant" {
			continue
		}
		if i < run.prompt {
			run.earlier++
		} else {
			run.turn++
		}
	}
	return run
}

// isPrompt says whether a user message is a prompt: text, no tool result.
func isPrompt(raw json.RawMessage) bool {
	text := false
	for _, b := range readBlocks(raw) {
		switch b.Type {
		case "tool_result":
			return false
		case "text":
			text = true
		}
	}
	return text
}

// conversationText is every text of the request's messages (text blocks
// and tool results), one per line.
func conversationText(req *messagesRequest) string {
	var b strings.Builder
	for _, m := range req.Messages {
		for _, c := range readBlocks(m.Content) {
			b.WriteString(c.Text)
			b.WriteByte('\n')
			for _, inner := range readBlocks(c.Content) {
				b.WriteString(inner.Text)
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

// missingTexts lists the texts of expect that the request's conversation lacks.
func missingTexts(req *messagesRequest, expect []string) []string {
	if len(expect) == 0 {
		return nil
	}
	all := conversationText(req)
	var missing []string
	for _, e := range expect {
		if !strings.Contains(all, e) {
			missing = append(missing, e)
		}
	}
	return missing
}

// expectMessage is the API error's message for a request that lacks texts of Expect.
func expectMessage(missing []string) string {
	q := make([]string, len(missing))
	for i, m := range missing {
		q[i] = strconv.Quote(m)
	}
	return "stand-in Messages API: the conversation does not contain " + strings.Join(q, ", ")
}

// contentBlock is a request content block the server reads.
type contentBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

// readBlocks reads message content, a string or an array of blocks.
func readBlocks(raw json.RawMessage) []contentBlock {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []contentBlock{{Type: "text", Text: s}}
	}
	var bs []contentBlock
	_ = json.Unmarshal(raw, &bs)
	return bs
}

func lastText(raw json.RawMessage) string {
	bs := readBlocks(raw)
	for i := len(bs) - 1; i >= 0; i-- {
		if bs[i].Type == "text" {
			return bs[i].Text
		}
	}
	return ""
}

func toolResults(raw json.RawMessage) []ToolResult {
	var out []ToolResult
	for _, b := range readBlocks(raw) {
		if b.Type != "tool_result" {
			continue
		}
		var text []string
		for _, c := range readBlocks(b.Content) {
			if c.Type == "text" {
				text = append(text, c.Text)
			}
		}
		out = append(out, ToolResult{ToolUseID: b.ToolUseID, Content: strings.Join(text, "\n"), IsError: b.IsError})
	}
	return out
}
