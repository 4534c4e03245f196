package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/schema"
)

// Errors the calls return, checked with errors.Is.
var (
	// ErrBuildTerminal: the dispatcher answered 409, the build is already terminal.
	ErrBuildTerminal = errors.New("build is already terminal")
	// ErrRejected: the dispatcher answered with a 4xx other than 409 and 429;
	// the request is not retried. The error is an *HTTPError.
	ErrRejected = errors.New("request rejected by the dispatcher")
	// ErrCapReached: the post would take the build past one of its
	// per-build caps (a problem of type schema.ProblemRunnerCap, 413 or
	// 422); posting more of that kind is refused the same way. It is also
	// ErrRejected.
	ErrCapReached = errors.New("the build reached a per-build cap of the dispatcher")
)

// HTTPError is an answer the client does not retry, or the last answer of
// a call whose context ended while retrying.
type HTTPError struct {
	Method, Path string
	StatusCode   int
	// Type is the problem's type, when the answer was a problem.
	Type string
	// Detail is the problem's detail or title, or the start of the body.
	Detail string
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Is makes errors.Is(err, ErrRejected), errors.Is(err, ErrBuildTerminal)
// and errors.Is(err, ErrCapReached) work.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrBuildTerminal:
		return e.StatusCode == http.StatusConflict
	case ErrCapReached:
		return e.Type == schema.ProblemRunnerCap && (e.StatusCode == http.StatusRequestEntityTooLarge || e.StatusCode == http.StatusUnprocessableEntity)
	case ErrRejected:
		return e.StatusCode >= 400 && e.StatusCode < 500 && e.StatusCode != http.StatusConflict && e.StatusCode != http.StatusTooManyRequests
	}
	return false
}

// Options configure a Client.
type Options struct {
	// BaseURL is the dispatcher's URL as the Job was given it. Required.
	BaseURL string
	// BuildID is the build this runner works for. Required.
	BuildID string
	// Token is the build's runner token. Required.
	Token string
	// HTTPClient sends the requests. Default: a client whose attempts time
	// out after AttemptTimeout.
	HTTPClient *http.Client
	// AttemptTimeout bounds one attempt when HTTPClient is nil. Default 30s.
	AttemptTimeout time.Duration
	// Backoff spaces the retries. Zero fields take Backoff's defaults.
	Backoff Backoff
	// Logger logs retries. Default: slog.Default().
	Logger *slog.Logger
	// UserAgent is sent with every request. Default "kiln-jobrunner".
	UserAgent string
}

// Client talks to the dispatcher about one build. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	buildID string
	token   string
	http    *http.Client
	backoff Backoff
	log     *slog.Logger
	ua      string
}

// New returns a Client, or an error naming the option at fault.
func New(o Options) (*Client, error) {
	var problems []string
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		problems = append(problems, fmt.Sprintf("base URL: must be an absolute http or https URL (got %q)", o.BaseURL))
	}
	if o.BuildID == "" {
		problems = append(problems, "build id: required")
	}
	if o.Token == "" {
		problems = append(problems, "token: required")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("dispatcher client: %s", strings.Join(problems, "; "))
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: cmp.Or(o.AttemptTimeout, 30*time.Second)}
	}
	return &Client{
		base:    u,
		buildID: o.BuildID,
		token:   o.Token,
		http:    hc,
		backoff: o.Backoff.withDefaults(),
		log:     cmp.Or(o.Logger, slog.Default()).With("component", "dispatcher-client"),
		ua:      cmp.Or(o.UserAgent, "kiln-jobrunner"),
	}, nil
}

// Task fetches the build's RunnerTask.
func (c *Client) Task(ctx context.Context) (schema.RunnerTask, error) {
	var t schema.RunnerTask
	_, err := c.do(ctx, http.MethodGet, "", nil, &t)
	return t, err
}

// PostEvents posts one batch. A batch the dispatcher already stored is
// acknowledged again (Duplicate), so retrying is safe. A 409 is
// ErrBuildTerminal; a batch past the build's event caps is ErrCapReached.
func (c *Client) PostEvents(ctx context.Context, b schema.EventBatch) (schema.EventBatchAck, error) {
	var ack schema.EventBatchAck
	_, err := c.do(ctx, http.MethodPost, "/events", b, &ack)
	return ack, err
}

// PostResult posts the build's result; the dispatcher stores it once: a
// retry of a result it accepted (the answer was lost) is acknowledged again
// (Accepted, Duplicate). A 409 (the build ended before this result came) is
// not an error: it returns a ResultAck with Accepted false, and is not retried.
func (c *Client) PostResult(ctx context.Context, r schema.BuildResult) (schema.ResultAck, error) {
	var ack schema.ResultAck
	code, err := c.do(ctx, http.MethodPost, "/result", r, &ack)
	if code == http.StatusConflict {
		ack.Accepted = false
		return ack, nil
	}
	return ack, err
}

// PutArtifact uploads one artifact; the answer carries its download URL.
// A 409 is ErrBuildTerminal; an artifact past the build's caps is ErrCapReached.
func (c *Client) PutArtifact(ctx context.Context, up schema.ArtifactUpload) (schema.Artifact, error) {
	var out schema.Artifact
	_, err := c.do(ctx, http.MethodPost, "/artifacts", up, &out)
	return out, err
}

// path is the request's path for logs and errors.
func (c *Client) path(suffix string) string {
	return schema.RunnerAPIPrefix + url.PathEscape(c.buildID) + suffix
}

// do sends one request until it gets an answer that is not retried or ctx
// ends. It decodes a 2xx body (and a 409 body, best effort) into out and
// returns the last status code.
func (c *Client) do(ctx context.Context, method, suffix string, in, out any) (int, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, fmt.Errorf("encoding %s %s: %w", method, c.path(suffix), err)
		}
	}
	u := c.base.JoinPath(c.path(suffix))
	var lastAnswer error // the last HTTP answer, kept when a later attempt gets none
	for attempt := 0; ; attempt++ {
		code, retryAfter, err := c.once(ctx, method, u.String(), body, out)
		if err == nil {
			return code, nil
		}
		var he *HTTPError
		if errors.As(err, &he) {
			if !retryable(he.StatusCode) {
				return code, err
			}
			lastAnswer = err
		} else if lastAnswer != nil {
			err = errors.Join(err, lastAnswer)
		}
		delay := c.backoff.Delay(attempt)
		if retryAfter > 0 {
			delay = min(max(delay, retryAfter), c.backoff.Max)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return code, fmt.Errorf("%s %s: giving up after %d attempts: %w", method, c.path(suffix), attempt+1, err)
		}
		c.log.Warn("dispatcher request failed; retrying", "method", method, "path", c.path(suffix),
			"attempt", attempt+1, "delay", delay.Round(time.Millisecond), "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return code, fmt.Errorf("%s %s: giving up after %d attempts: %w", method, c.path(suffix), attempt+1, errors.Join(err, ctx.Err()))
		case <-t.C:
		}
	}
}

func retryable(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

// once sends one attempt. Transport errors and retryable status codes are
// returned as errors (the latter as *HTTPError) with any Retry-After delay.
func (c *Client) once(ctx context.Context, method, u string, body []byte, out any) (int, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, 0, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%s %s: %w", method, req.URL.Path, scrub(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, 0, fmt.Errorf("%s %s: reading the answer: %w", method, req.URL.Path, err)
	}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		if out != nil && len(bytes.TrimSpace(data)) > 0 {
			if err := json.Unmarshal(data, out); err != nil {
				// The request was taken; an unreadable answer is not worth a retry.
				c.log.Warn("dispatcher answer is not the expected JSON", "path", req.URL.Path, "err", err)
			}
		}
		return code, 0, nil
	case code == http.StatusConflict && out != nil:
		_ = json.Unmarshal(data, out)
	}
	typ, det := problem(data)
	return code, retryAfter(resp.Header.Get("Retry-After")), &HTTPError{Method: method, Path: req.URL.Path, StatusCode: code, Type: typ, Detail: det}
}

// scrub drops the URL from a transport error: it is logged and reported,
// and the path is already in the message.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// problem reads an RFC 9457 problem's type and detail (or title), or else
// the start of the body as the detail.
func problem(body []byte) (typ, detail string) {
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &p) == nil && (p.Detail != "" || p.Title != "") {
		return p.Type, cmp.Or(p.Detail, p.Title)
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return "", strings.ToValidUTF8(s, "?")
}
