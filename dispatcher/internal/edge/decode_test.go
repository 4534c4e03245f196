package edge_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/schema"
)

type inner struct {
	Name string `json:"name"`
}

type Embedded struct {
	Shared string `json:"shared"`
	Deep   string // no tag: its Go name
}

// target has the shapes the API's bodies have: tagged fields, a map of
// strings, a nested struct, a slice, raw JSON, a time, an embedded struct.
type target struct {
	Embedded
	Prompt    string            `json:"prompt"`
	Variables map[string]string `json:"variables,omitempty"`
	Inner     inner             `json:"inner"`
	List      []inner           `json:"list"`
	Raw       json.RawMessage   `json:"raw"`
	At        time.Time         `json:"at"`
	Count     int               `json:"count"`
	Skipped   string            `json:"-"`
}

func TestBodyUnmarshal(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat(`{"raw":`, 1) + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "}"
	for _, tc := range []struct {
		name   string
		body   Body
		in     string
		status int    // 0: accepted
		detail string // in the detail
		field  string // the field named in errors, if any
	}{
		{"ok", Body{}, `{"prompt":"x","variables":{"A":"b"},"inner":{"name":"n"},"list":[{"name":"m"}],"raw":{"Any":[1,{"K":"v"}]},"at":"2026-01-02T03:04:05Z","count":3,"shared":"s","Deep":"d"}`, 0, "", ""},
		{"exact case", Body{}, `{"PROMPT":"x"}`, 422, `PROMPT: unknown field (keys are case-sensitive: did you mean "prompt"?)`, "PROMPT"},
		{"exact case, nested", Body{}, `{"inner":{"Name":"x"}}`, 422, `inner.Name: unknown field (keys are case-sensitive`, "inner.Name"},
		{"exact case, in a list", Body{}, `{"list":[{"name":"a"},{"NAME":"b"}]}`, 422, `list[1].NAME: unknown field`, "list[1].NAME"},
		{"exact case, embedded", Body{}, `{"SHARED":"x"}`, 422, "SHARED: unknown field", "SHARED"},
		{"Go name without a tag", Body{}, `{"deep":"x"}`, 422, "deep: unknown field", "deep"},
		{"long s folds to s in encoding/json", Body{}, "{\"\u017fhared\":\"x\"}", 422, "unknown field", "\u017fhared"},
		{"dash-tagged field", Body{}, `{"Skipped":"x"}`, 422, "Skipped: unknown field", "Skipped"},
		{"unknown field", Body{}, `{"prompt":"x","promt":"y"}`, 422, "promt: unknown field", "promt"},
		{"duplicate key", Body{}, `{"prompt":"x","prompt":"y"}`, 422, "prompt: appears more than once", "prompt"},
		{"duplicate map key", Body{}, `{"variables":{"a":"1","a":"2"}}`, 422, "variables.a: appears more than once", "variables.a"},
		{"trailing data", Body{}, `{"prompt":"x"} {}`, 400, "single JSON value; more data follows at byte 15", ""},
		{"trailing brace", Body{}, `{"prompt":"x"}}`, 400, "single JSON value", ""},
		{"trailing space is fine", Body{}, "{\"prompt\":\"x\"}\n\t ", 0, "", ""},
		{"depth", Body{MaxDepth: 4}, `{"inner":{"name":"x"},"raw":[[[[]]]]}`, 400, "nested deeper than 4 levels at raw[0][0][0]", ""},
		{"default depth", Body{}, deep, 400, "nested deeper than 32 levels", ""},
		{"depth within the limit", Body{MaxDepth: 5}, `{"raw":[[[[]]]]}`, 0, "", ""},
		{"invalid UTF-8", Body{}, "{\"prompt\":\"a\xffb\"}", 400, "body: must be UTF-8 (invalid byte sequence at byte 12)", ""},
		{"NUL in a value", Body{}, `{"prompt":"a\u0000b"}`, 422, "prompt: must not contain NUL (U+0000)", "prompt"},
		{"NUL in a map value", Body{}, `{"variables":{"K":"\u0000"}}`, 422, "variables.K: must not contain NUL (U+0000)", "variables.K"},
		{"NUL in a key", Body{}, `{"variables":{"a\u0000":"x"}}`, 422, "variables: keys must not contain NUL (U+0000)", "variables"},
		{"NUL in raw JSON", Body{}, `{"raw":{"text":"\u0000"}}`, 422, "raw.text: must not contain NUL", "raw.text"},
		{"NUL allowed", Body{AllowNUL: true}, `{"prompt":"a\u0000b","raw":{"t":"\u0000"}}`, 0, "", ""},
		{"escaped NUL text is not NUL", Body{}, `{"prompt":"\\u0000"}`, 0, "", ""},
		{"raw NUL byte", Body{}, "{\"prompt\":\"a\x00\"}", 400, "malformed JSON", ""},
		{"empty", Body{}, "", 400, "body: required", ""},
		{"blank", Body{}, " \n", 400, "body: required", ""},
		{"malformed", Body{}, "{\n  \"prompt\": \"x\",\n  oops\n}", 400, "malformed JSON at line 3, column 3", ""},
		{"truncated", Body{}, `{"prompt": "x"`, 400, "malformed JSON: unexpected end", ""},
		{"wrong type", Body{}, `{"count":"3"}`, 422, "count: must be a number, got JSON string", "count"},
		{"not an object", Body{}, `[1]`, 422, "body: must be an object, got JSON array", "body"},
		{"map of strings", Body{}, `{"variables":{"a":1}}`, 422, "values must be strings", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.body.MaxBytes = 1 << 20
			var dst target
			err := tc.body.Unmarshal([]byte(tc.in), &dst)
			if tc.status == 0 {
				require.NoError(t, err)
				return
			}
			var e *edge.Error
			require.True(t, errors.As(err, &e), "%T %v", err, err)
			assert.Equal(t, tc.status, e.Status, e.Detail)
			assert.Contains(t, e.Detail, tc.detail)
			if tc.field != "" {
				require.Len(t, e.Errors, 1)
				assert.Equal(t, tc.field, e.Errors[0].Field)
			}
		})
	}
}

// The schema's own bodies decode through the checker: their RawMessage
// payloads and times stay free-form, their fields exact.
func TestBodySchemaTypes(t *testing.T) {
	t.Parallel()
	b := Body{MaxBytes: 1 << 20}
	var batch schema.EventBatch
	require.NoError(t, b.Unmarshal([]byte(`{"batch":1,"events":[{"type":"agent_text","time":"2026-01-02T03:04:05Z","payload":{"Text":"x"}}]}`), &batch))
	assert.JSONEq(t, `{"Text":"x"}`, string(batch.Events[0].Payload))
	var cb schema.CreateAndBuild
	err := b.Unmarshal([]byte(`{"project":{"name":"p"},"build":{"Prompt":"x"}}`), &cb)
	var e *edge.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "build.Prompt", e.Errors[0].Field)
}

// Body is edge.Body; the alias keeps the table short.
type Body = edge.Body

func post(t *testing.T, url, contentType, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var p map[string]any
	if res.StatusCode != http.StatusOK {
		require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
		require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
	}
	return res, p
}

// decodeServer answers 200 with what Body{MaxBytes: limit} decoded, or the problem.
func decodeServer(t *testing.T, limit int64) *httptest.Server {
	srv := httptest.NewServer(edge.Requests(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var dst target
		if err := (edge.Body{MaxBytes: limit}).Decode(w, r, &dst); err != nil {
			edge.Write(w, r, err)
			return
		}
		edge.JSON(w, http.StatusOK, dst)
	})))
	t.Cleanup(srv.Close)
	return srv
}

func TestBodyDecodeContentTypeAndSize(t *testing.T) {
	t.Parallel()
	srv := decodeServer(t, 64)
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		detail                  string
	}{
		{"json", "application/json", `{"prompt":"x"}`, 200, ""},
		{"json with utf-8", "application/json; charset=UTF-8", `{"prompt":"x"}`, 200, ""},
		{"a +json type", "application/merge-patch+json", `{"prompt":"x"}`, 200, ""},
		{"utf-16", "application/json; charset=utf-16", `{"prompt":"x"}`, 415, `Content-Type: the charset must be utf-8 (got "utf-16")`},
		{"latin-1", "application/json;charset=iso-8859-1", `{"prompt":"x"}`, 415, "the charset must be utf-8"},
		{"text", "text/plain", `{"prompt":"x"}`, 415, "Content-Type: must be application/json"},
		{"none", "", `{"prompt":"x"}`, 415, "Content-Type: must be application/json"},
		{"malformed", "application/json; charset", `{"prompt":"x"}`, 415, "Content-Type: must be application/json"},
		{"over the limit", "application/json", `{"prompt":"` + strings.Repeat("a", 64) + `"}`, 413, "body: must be at most 64 bytes"},
	} {
		res, p := post(t, srv.URL, tc.contentType, tc.body)
		assert.Equal(t, tc.status, res.StatusCode, tc.name)
		if tc.status != 200 {
			assert.Contains(t, p["detail"], tc.detail, tc.name)
			assert.Equal(t, float64(tc.status), p["status"], tc.name)
		}
	}

	// A body without a declared length that grows past the limit.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"prompt":"` + strings.Repeat("a", 100)))
		_ = pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL, pr)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 413, res.StatusCode, "sent chunked, without a length")
}

// rawRequest sends head (a request without its body) on a fresh connection
// and reads the answer; the client never sends the body it declared.
func rawRequest(t *testing.T, addr, head string) (*http.Response, []byte, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = io.WriteString(c, head)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "an answer comes although the declared body never does")
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	// What follows the answer: the server closed the connection.
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the server closes the connection instead of waiting for the body")
	return res, b, c
}

// A declared Content-Length over the route's limit is answered 413 before
// a byte of the body is read, and the connection is closed rather than
// drained: the client that never sends its body is not waited for. Go's
// server would otherwise read up to 256 KiB of it before answering.
func TestBodyEarly413WithoutBody(t *testing.T) {
	t.Parallel()
	srv := decodeServer(t, 1024)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, declared := range []int{2000, 100_000, 10 << 20} {
		res, body, _ := rawRequest(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(declared)+"\r\n\r\n")
		assert.Equal(t, 413, res.StatusCode, declared)
		assert.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
		assert.Contains(t, string(body), "body: must be at most 1024 bytes")
	}
}
