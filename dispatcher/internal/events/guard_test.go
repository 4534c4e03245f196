package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// openSSE opens an event stream and returns its status; a 200 stream stays
// open until close is called, anything else is read and closed.
func (e *env) openSSE(id, token string) (status int, body string, hdr http.Header, close func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/builds/"+id+"/events", nil)
	require.NoError(e.t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		return res.StatusCode, string(b), res.Header, func() {}
	}
	return res.StatusCode, "", res.Header, func() { cancel(); res.Body.Close() }
}

func tokenID(t *testing.T, e *env, token string) string {
	t.Helper()
	p, err := auth.New(e.db.Pool, auth.Options{}).Authenticate(context.Background(), token)
	require.NoError(t, err)
	return p.TokenID
}

// A token holds at most StreamsPerToken streams, SSE and WebSocket
// together; one more is 429 problem+json, other tokens are not affected,
// and a stream that ends frees its slot.
func TestStreamsPerToken(t *testing.T) {
	e := setup(t, func(o *app.Options) { o.StreamsPerToken = 2 })
	id := e.build()
	bot := e.env.Token("bot", e.project)

	st, _, _, close1 := e.openSSE(id, bot)
	require.Equal(t, http.StatusOK, st)
	ws := e.wsDial(e.srv.URL, id, bot, "")

	st, body, hdr, _ := e.openSSE(id, bot)
	require.Equal(t, http.StatusTooManyRequests, st, body)
	assert.Equal(t, "application/problem+json", hdr.Get("Content-Type"))
	assert.Equal(t, "5", hdr.Get("Retry-After"))
	var p map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &p))
	assert.EqualValues(t, 429, p["status"])
	assert.Equal(t, "https://kiln.dev/problems/rate-limited", p["type"])
	assert.Contains(t, p["detail"], "this token may hold 2 event streams open at once")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/builds/"+id+"/events/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + bot}}})
	require.Error(t, err, "the WebSocket counts against the same cap")
	require.NotNil(t, res)
	assert.Equal(t, http.StatusTooManyRequests, res.StatusCode)

	st, _, _, closeAdmin := e.openSSE(id, e.admin)
	assert.Equal(t, http.StatusOK, st, "another token has slots of its own")
	defer closeAdmin()

	close1()
	var closeAgain func()
	require.Eventually(t, func() bool {
		st, _, _, c := e.openSSE(id, bot)
		closeAgain = c
		return st == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "a closed stream frees its slot")
	closeAgain()

	require.NoError(t, ws.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool {
		st1, _, _, c1 := e.openSSE(id, bot)
		defer c1()
		st2, _, _, c2 := e.openSSE(id, bot)
		defer c2()
		return st1 == http.StatusOK && st2 == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "a closed WebSocket frees its slot: both are free again")
}

// Open streams end within a heartbeat of their token being revoked: SSE
// with an `unauthorized` event, the WebSocket with CloseTokenInvalid; and
// the token is refused at once in this process, its cache entry dropped.
func TestRevokedTokenEndsStreams(t *testing.T) {
	e := setup(t) // heartbeat 200ms, auth cache one minute
	id := e.build()
	bot := e.env.Token("bot", e.project)

	frames, stop := e.sse(e.srv.URL, id, bot, nil, "")
	defer stop()
	evs, _ := collect(t, frames, 1)
	require.Len(t, evs, 1)
	ws := e.wsDial(e.srv.URL, id, bot, "")
	got, err := wsRead(t, ws, 1)
	require.NoError(t, err)
	require.Len(t, got, 1)

	// A heartbeat passes with the token valid: the streams stay.
	time.Sleep(500 * time.Millisecond)
	e.appendEvents(id, 1)
	evs, _ = collect(t, frames, 1)
	require.Len(t, evs, 1, "the SSE stream outlived heartbeats while its token was valid")
	got, err = wsRead(t, ws, 1)
	require.NoError(t, err)
	require.Len(t, got, 1, "so did the WebSocket")

	_, already, err := store.RevokeToken(context.Background(), e.db.Pool, tokenID(t, e, bot))
	require.NoError(t, err)
	require.False(t, already)

	var last frame
	select {
	case last = <-frames:
	case <-time.After(60 * time.Second):
		t.Fatal("the SSE stream did not end")
	}
	require.Equal(t, schema.SSEUnauthorized, last.Event, "the next frame ends the stream: %+v", last)
	var why schema.StreamDropped
	require.NoError(t, json.Unmarshal([]byte(last.Data), &why))
	assert.Equal(t, "the token is no longer valid", why.Reason)
	assert.EqualValues(t, 2, why.ResumeAfter)
	_, open := <-frames
	assert.False(t, open, "the SSE stream ended")

	_, err = wsRead(t, ws, 0)
	var ce websocket.CloseError
	require.True(t, errors.As(err, &ce), "%v", err)
	assert.EqualValues(t, schema.CloseTokenInvalid, ce.Code)

	st, body, _, _ := e.openSSE(id, bot)
	assert.Equal(t, http.StatusUnauthorized, st, "refused at once, although the auth cache would keep it a minute: %s", body)
	st, _, _, closeAdmin := e.openSSE(id, e.admin)
	defer closeAdmin()
	assert.Equal(t, http.StatusOK, st, "other tokens' streams are not affected")
}
