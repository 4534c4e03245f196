package lambda

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
)

// Handler serves HTTP events with an http.Handler. It implements
// github.com/aws/aws-lambda-go/lambda.Handler.
type Handler struct {
	HTTP   http.Handler // required: the router
	Logger *slog.Logger // default: discard
}

// ErrUnsupportedEvent is returned for an event that is neither a Function URL
// nor an HTTP API payload 2.0 request (the invocation fails; no HTTP answer exists).
var ErrUnsupportedEvent = errors.New("lambda: unsupported event: want a Function URL or API Gateway HTTP API (payload format 2.0) request")

// probe holds the fields that tell the event kinds apart.
type probe struct {
	Version        string `json:"version"`
	RequestContext struct {
		DomainName string `json:"domainName"`
		HTTP       struct {
			Method string `json:"method"`
		} `json:"http"`
	} `json:"requestContext"`
}

// Invoke decodes a Function URL or HTTP API v2 event, serves it and encodes
// the matching response.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	var p probe
	if err := json.Unmarshal(payload, &p); err != nil || p.Version != "2.0" || p.RequestContext.HTTP.Method == "" {
		return nil, ErrUnsupportedEvent
	}
	if strings.Contains(p.RequestContext.DomainName, ".lambda-url.") {
		var ev events.LambdaFunctionURLRequest
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, fmt.Errorf("decoding Function URL event: %w", err)
		}
		resp, err := h.FunctionURL(ctx, ev)
		if err != nil {
			return nil, err
		}
		return json.Marshal(resp)
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, fmt.Errorf("decoding HTTP API event: %w", err)
	}
	resp, err := h.HTTPAPI(ctx, ev)
	if err != nil {
		return nil, err
	}
	return json.Marshal(resp)
}

// FunctionURL serves a Lambda Function URL request.
func (h *Handler) FunctionURL(ctx context.Context, ev events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	rc := ev.RequestContext
	r, err := newRequest(ctx, in{method: rc.HTTP.Method, path: ev.RawPath, query: ev.RawQueryString, headers: ev.Headers,
		cookies: ev.Cookies, body: ev.Body, b64: ev.IsBase64Encoded, requestID: rc.RequestID, sourceIP: rc.HTTP.SourceIP,
		host: rc.DomainName, protocol: rc.HTTP.Protocol})
	if err != nil {
		return events.LambdaFunctionURLResponse{}, err
	}
	o := h.serve(r)
	return events.LambdaFunctionURLResponse{StatusCode: o.status, Headers: o.headers, Body: o.body,
		IsBase64Encoded: o.b64, Cookies: o.cookies}, nil
}

// HTTPAPI serves an API Gateway HTTP API request (payload format 2.0). A named
// stage's prefix is taken off the path, so routes are the same as in the cluster.
func (h *Handler) HTTPAPI(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	rc := ev.RequestContext
	path := ev.RawPath
	if s := rc.Stage; s != "" && s != "$default" {
		if rest, ok := strings.CutPrefix(path, "/"+s); ok && (rest == "" || rest[0] == '/') {
			path = cmp.Or(rest, "/")
		}
	}
	r, err := newRequest(ctx, in{method: rc.HTTP.Method, path: path, query: ev.RawQueryString, headers: ev.Headers,
		cookies: ev.Cookies, body: ev.Body, b64: ev.IsBase64Encoded, requestID: rc.RequestID, sourceIP: rc.HTTP.SourceIP,
		host: rc.DomainName, protocol: rc.HTTP.Protocol})
	if err != nil {
		return events.APIGatewayV2HTTPResponse{}, err
	}
	o := h.serve(r)
	return events.APIGatewayV2HTTPResponse{StatusCode: o.status, Headers: o.headers, Body: o.body,
		IsBase64Encoded: o.b64, Cookies: o.cookies}, nil
}

// in is what both event kinds carry.
type in struct {
	method, path, query string
	headers             map[string]string
	cookies             []string
	body                string
	b64                 bool
	requestID, sourceIP string
	host, protocol      string
}

func newRequest(ctx context.Context, e in) (*http.Request, error) {
	body := []byte(e.body)
	if e.b64 {
		var err error
		if body, err = base64.StdEncoding.DecodeString(e.body); err != nil {
			return nil, fmt.Errorf("decoding the base64 request body: %w", err)
		}
	}
	// rawPath is the path as the client sent it (still escaped).
	target := cmp.Or(e.path, "/")
	if e.query != "" {
		target += "?" + e.query
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		u = &url.URL{Path: cmp.Or(e.path, "/"), RawQuery: e.query}
	}
	r, err := http.NewRequestWithContext(ctx, e.method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	// Payload 2.0 joins repeated headers with commas, which HTTP treats as the same.
	for k, v := range e.headers {
		r.Header.Set(k, v)
	}
	if len(e.cookies) > 0 {
		r.Header.Set("Cookie", strings.Join(e.cookies, "; "))
	}
	if r.Header.Get("X-Request-Id") == "" && e.requestID != "" {
		r.Header.Set("X-Request-Id", e.requestID)
	}
	r.Host = cmp.Or(r.Header.Get("Host"), e.host)
	r.RemoteAddr = e.sourceIP
	r.ContentLength = int64(len(body))
	if r.ContentLength == 0 {
		r.Body = http.NoBody
	}
	if e.protocol != "" {
		if major, minor, ok := http.ParseHTTPVersion(e.protocol); ok {
			r.Proto, r.ProtoMajor, r.ProtoMinor = e.protocol, major, minor
		}
	}
	return r, nil
}

type out struct {
	status  int
	headers map[string]string
	cookies []string
	body    string
	b64     bool
}

func (h *Handler) serve(r *http.Request) out {
	w := newRecorder()
	logger := h.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	edge.Requests(logger)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if streaming(r) {
			edge.Refuse(w, r, http.StatusNotImplemented, "live event streams (SSE, WebSocket) are not served through AWS Lambda; "+
				"list events as JSON, or stream from a dispatcher in the cluster")
			return
		}
		defer func() {
			if rec := recover(); rec != nil {
				w.reset()
				edge.Write(w, r, fmt.Errorf("panic serving request: %v", rec))
			}
		}()
		h.HTTP.ServeHTTP(w, r)
	})).ServeHTTP(w, r)
	o := out{status: w.status(), headers: map[string]string{}}
	for k, vs := range w.header {
		if http.CanonicalHeaderKey(k) == "Set-Cookie" {
			o.cookies = append(o.cookies, vs...)
			continue
		}
		o.headers[k] = strings.Join(vs, ",")
	}
	body := w.body.Bytes()
	if textual(w.header.Get("Content-Type"), body) {
		o.body = string(body)
	} else {
		o.body, o.b64 = base64.StdEncoding.EncodeToString(body), true
	}
	return o
}

func streaming(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream") ||
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// textual reports whether a body can travel as a JSON string unencoded.
func textual(contentType string, body []byte) bool {
	if len(body) == 0 {
		return true
	}
	if !utf8.Valid(body) {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return contentType == ""
	}
	switch {
	case strings.HasPrefix(mt, "text/"), strings.HasSuffix(mt, "json"), strings.HasSuffix(mt, "+json"),
		strings.HasSuffix(mt, "xml"), strings.HasSuffix(mt, "yaml"), mt == "application/javascript",
		mt == "application/x-www-form-urlencoded":
		return true
	}
	return false
}

// recorder is a buffering http.ResponseWriter.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if w.header.Get("Content-Type") == "" {
		w.header.Set("Content-Type", http.DetectContentType(b))
	}
	return w.body.Write(b)
}

// ReadFrom lets io.Copy into the recorder work as on a real connection.
func (w *recorder) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.ReadFrom(r)
}

// Flush is a no-op: a buffered Lambda response is sent whole.
func (w *recorder) Flush() {}

func (w *recorder) status() int { return cmp.Or(w.code, http.StatusOK) }

// reset drops what a handler that panicked wrote, but the request id.
func (w *recorder) reset() {
	id := w.header.Get("X-Request-Id")
	w.header = http.Header{}
	if id != "" {
		w.header.Set("X-Request-Id", id)
	}
	w.code = 0
	w.body.Reset()
}
