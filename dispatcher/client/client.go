package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnbuild/kiln/schema"
)

// Client calls a dispatcher's REST API. Its methods may be called
// concurrently; the zero HTTP uses a client of its own per call.
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:8080
	Token   string       // sent as a Bearer token, never printed
	HTTP    *http.Client // default: 30s timeout (streams use their own)
}

// APIError is a non-2xx answer; Detail comes from the problem+json body.
type APIError struct {
	Status     int
	Detail     string
	RetryAfter time.Duration // from a Retry-After header in seconds; 0 if none
}

func (e *APIError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Detail)
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("User-Agent", "kiln-client/1")
	return req, nil
}

// do sends a request and decodes a 2xx JSON answer into out (a *[]byte
// gets the body as it is).
func (c *Client) do(ctx context.Context, method, path string, body, out any, hdr ...string) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] != "" {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		return apiError(res)
	}
	switch out := out.(type) {
	case nil:
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		return nil
	case *[]byte:
		*out, err = io.ReadAll(res.Body)
		return err
	default:
		return json.NewDecoder(res.Body).Decode(out)
	}
}

func apiError(res *http.Response) error {
	var p struct {
		Detail string `json:"detail"`
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	_ = json.Unmarshal(b, &p)
	e := &APIError{Status: res.StatusCode, Detail: p.Detail}
	if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

// Submit starts a build of project (an id, or a name through the
// /project/{name}/build alias) and returns what the API accepted.
//
// Every submission carries an Idempotency-Key (a fresh one when none is
// given), so Submit can retry what may not have arrived: network errors and
// 429, 502, 503 and 504 answers are retried SubmitAttempts times in all,
// after Retry-After or a growing pause, and the build is still made once.
func (c *Client) Submit(ctx context.Context, project string, spec schema.BuildSpec, idempotencyKey string) (*schema.BuildAccepted, error) {
	return c.retrySubmit(ctx, idempotencyKey, func(key string) (*schema.BuildAccepted, error) {
		return c.SubmitOnce(ctx, project, spec, key)
	})
}

// Followup starts a follow-up of the build taskID: a new build of the same
// project that continues taskID's agent session (POST
// /builds/{taskId}/followups). spec is a BuildSpec; its Fallback says what
// to do when the session cannot be continued. It is sent and retried as
// Submit's submissions are, under one Idempotency-Key.
func (c *Client) Followup(ctx context.Context, taskID string, spec schema.BuildSpec, idempotencyKey string) (*schema.BuildAccepted, error) {
	return c.retrySubmit(ctx, idempotencyKey, func(key string) (*schema.BuildAccepted, error) {
		var acc schema.BuildAccepted
		err := c.do(ctx, http.MethodPost, "/builds/"+url.PathEscape(taskID)+"/followups", spec, &acc, "Idempotency-Key", key)
		return &acc, err
	})
}

// retrySubmit sends a submission until it is answered or SubmitAttempts
// are spent (see Submit), every time under one Idempotency-Key.
func (c *Client) retrySubmit(ctx context.Context, idempotencyKey string, once func(key string) (*schema.BuildAccepted, error)) (*schema.BuildAccepted, error) {
	if idempotencyKey == "" {
		idempotencyKey = "kiln-client-" + uuid.NewString()
	}
	pause := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		acc, err := once(idempotencyKey)
		var apiErr *APIError
		retry := err != nil && ctx.Err() == nil && attempt < SubmitAttempts
		if errors.As(err, &apiErr) {
			retry = retry && retryableStatus(apiErr.Status)
			if apiErr.RetryAfter > 0 {
				pause = min(apiErr.RetryAfter, 10*time.Second)
			}
		}
		if !retry {
			return acc, err
		}
		select {
		case <-ctx.Done():
			return acc, err
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// SubmitAttempts is how many times Submit sends a submission at most.
const SubmitAttempts = 6

// SubmitOnce sends one submission, as Submit does, but does not retry it; an
// empty idempotencyKey sends none, so a submission that may not have arrived
// cannot be told apart from a new one.
func (c *Client) SubmitOnce(ctx context.Context, project string, spec schema.BuildSpec, idempotencyKey string) (*schema.BuildAccepted, error) {
	path := "/projects/" + url.PathEscape(project) + "/builds"
	if !looksLikeUUID(project) {
		path = "/project/" + url.PathEscape(project) + "/build"
	}
	var acc schema.BuildAccepted
	err := c.do(ctx, http.MethodPost, path, spec, &acc, "Idempotency-Key", idempotencyKey)
	return &acc, err
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Get returns a build.
func (c *Client) Get(ctx context.Context, id string) (*schema.Build, error) {
	var b schema.Build
	err := c.do(ctx, http.MethodGet, "/builds/"+url.PathEscape(id), nil, &b)
	return &b, err
}

// BuildList is a page of build summaries; Get returns a whole build.
type BuildList struct {
	Builds     []schema.BuildSummary `json:"builds"`
	NextCursor string                `json:"next_cursor,omitempty"`
}

// List returns a page of a project's builds, newest first, as summaries (no
// prompt or variables).
func (c *Client) List(ctx context.Context, projectID string, status schema.Status, limit int, cursor string) (*BuildList, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", string(status))
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	path := "/projects/" + url.PathEscape(projectID) + "/builds"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out BuildList
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return &out, err
}

// Cancel cancels a pending or running build.
func (c *Client) Cancel(ctx context.Context, id, reason string) (*schema.Build, error) {
	var body any
	if reason != "" {
		body = map[string]string{"reason": reason}
	}
	var b schema.Build
	err := c.do(ctx, http.MethodPost, "/builds/"+url.PathEscape(id)+"/cancel", body, &b)
	return &b, err
}

// Events returns a page of a build's events after seq after, in order (at
// most 1000; ask again after the last one for more). Watch follows them live.
func (c *Client) Events(ctx context.Context, id string, after int64) ([]schema.Event, error) {
	var out struct {
		Events []schema.Event `json:"events"`
	}
	path := "/builds/" + url.PathEscape(id) + "/events"
	if after > 0 {
		path += "?after=" + strconv.FormatInt(after, 10)
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Events, err
}

// Artifact downloads a file a build uploaded (BuildResult.Artifacts[].Path).
func (c *Client) Artifact(ctx context.Context, id, path string) ([]byte, error) {
	var b []byte
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	err := c.do(ctx, http.MethodGet, schema.ArtifactURL(url.PathEscape(id), strings.Join(segs, "/")), nil, &b)
	return b, err
}

// CreateProject creates a project (an admin token's right) and returns it,
// its callback secret included: the only answer that shows it.
func (c *Client) CreateProject(ctx context.Context, in schema.ProjectInput) (*schema.Project, error) {
	var p schema.Project
	err := c.do(ctx, http.MethodPost, "/projects", in, &p)
	return &p, err
}

// Ready reports whether the dispatcher answers GET /readyz with 200: it is
// serving and reaches its database. It sends no token.
func (c *Client) Ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.BaseURL, "/")+"/readyz", nil)
	if err != nil {
		return err
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return apiError(res)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	return nil
}

// ProjectID resolves a project name to its id (an id is returned as is).
func (c *Client) ProjectID(ctx context.Context, project string) (string, error) {
	if looksLikeUUID(project) {
		return project, nil
	}
	var out struct {
		Projects []schema.Project `json:"projects"`
	}
	if err := c.do(ctx, http.MethodGet, "/projects", nil, &out); err != nil {
		return "", err
	}
	for _, p := range out.Projects {
		if p.Name == project {
			return p.ID, nil
		}
	}
	return "", &APIError{Status: http.StatusNotFound, Detail: "project " + project + ": not found"}
}

func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case !strings.ContainsRune("0123456789abcdefABCDEF", r):
			return false
		}
	}
	return true
}
