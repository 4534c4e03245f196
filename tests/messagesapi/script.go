package messagesapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// Script is what the model says in one agent conversation: its i-th Turn
// answers the request whose conversation holds i assistant messages.
// Scripts are JSON too (see LoadScript), with the field names in lower case
// ("name", "turns", "text", "tools", "usage", "expect", "error", "stall",
// "drop_after", "times").
type Script struct {
	Name  string `json:"name"`
	Turns []Turn `json:"turns"`
}

// Turn is one answer of the model. With Error set the request is refused
// with that error (Error.Times requests, then the turn is served normally).
// Otherwise the answer holds Text (when not empty) and then one tool_use
// block per Tools entry; its stop_reason is tool_use when there are tools,
// end_turn when not.
type Turn struct {
	Text  string
	Tools []ToolUse
	// Usage is reported for this turn; all zero means 100 input and 10
	// output tokens. The CLI prices it by the request's model name: for its
	// default model (claude-opus-5-5 in 2.1.328) 20000 input and 2000 output
	// tokens cost $0.12 (BigUsage), enough to pass a small --max-budget-usd
	// in one turn.
	Usage Usage
	// Expect lists texts the request's conversation (any message's text or
	// tool result, the earlier conversation of a resumed session included)
	// must contain. A request lacking one is refused with a 400
	// invalid_request_error naming the missing texts (which the CLI does not
	// retry: the run fails at once and says so), and Request.Missing lists them.
	Expect []string
	Error  *APIError
	// Stall waits this long (or until the client goes away) before answering.
	Stall time.Duration
	// DropAfter drops the connection mid-stream right after the first SSE
	// event of this name (message_start, content_block_start,
	// content_block_delta, content_block_stop, message_delta). A request that
	// does not stream is dropped before its answer instead.
	DropAfter string
	// Times is how many requests for this turn get the Stall and DropAfter
	// before it is answered without them; 0 means every request.
	Times int
}

// ToolUse is a tool_use block: the tool's name and its input. Relative
// paths in file tools resolve against the CLI's working directory.
type ToolUse struct {
	Name  string         `json:"name"`
	Input map[string]any `json:"input"`
}

// Usage is the token usage a turn reports.
type Usage struct {
	InputTokens              int `json:"input_tokens,omitempty"`
	OutputTokens             int `json:"output_tokens,omitempty"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens,omitempty"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens,omitempty"`
}

// APIError is an error answer in the API's shape
// {"type":"error","error":{"type":Type,"message":Message}} with HTTP Status.
type APIError struct {
	Status int `json:"status"`
	// Type defaults to the API's type for Status (401 authentication_error,
	// 529 overloaded_error, …).
	Type string `json:"type,omitempty"`
	// Message defaults to a short text naming the status.
	Message string `json:"message,omitempty"`
	// RetryAfter, in seconds, is sent as the retry-after header when > 0.
	RetryAfter int `json:"retry_after,omitempty"`
	// Times is how many requests get the error before the turn is served
	// normally; 0 means every request.
	Times int `json:"times,omitempty"`
}

// BigUsage is a turn's usage that the pinned CLI prices at $0.12 with its
// default model (claude-opus-5-5): one such turn passes a budget below that.
var BigUsage = Usage{InputTokens: 20000, OutputTokens: 2000}

// errorTypes are the API's error types by status.
var errorTypes = map[int]string{
	http.StatusBadRequest:            "invalid_request_error",
	http.StatusUnauthorized:          "authentication_error",
	http.StatusForbidden:             "permission_error",
	http.StatusNotFound:              "not_found_error",
	http.StatusRequestEntityTooLarge: "request_too_large",
	http.StatusTooManyRequests:       "rate_limit_error",
	http.StatusInternalServerError:   "api_error",
	529:                              "overloaded_error",
}

// dropEvents are the SSE events a Turn may drop the connection after.
var dropEvents = map[string]bool{
	"message_start": true, "content_block_start": true, "content_block_delta": true,
	"content_block_stop": true, "message_delta": true,
}

func (e *APIError) errorType() string {
	if e.Type != "" {
		return e.Type
	}
	if t, ok := errorTypes[e.Status]; ok {
		return t
	}
	if e.Status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

func (e *APIError) message() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("stand-in Messages API: %d %s", e.Status, http.StatusText(e.Status))
}

// Validate reports the first thing in s that the server cannot answer with.
func (s Script) Validate() error {
	var errs []error
	for i, t := range s.Turns {
		where := fmt.Sprintf("script %q: turns[%d]", s.Name, i)
		if t.Error != nil && (t.Error.Status < 400 || t.Error.Status > 599) {
			errs = append(errs, fmt.Errorf("%s: error.status %d: must be 400-599", where, t.Error.Status))
		}
		if t.Error != nil && t.Error.Times < 0 {
			errs = append(errs, fmt.Errorf("%s: error.times %d: must be >= 0", where, t.Error.Times))
		}
		if t.DropAfter != "" && !dropEvents[t.DropAfter] {
			errs = append(errs, fmt.Errorf("%s: drop_after %q: must be one of message_start, content_block_start, content_block_delta, content_block_stop, message_delta", where, t.DropAfter))
		}
		if t.Stall < 0 || t.Times < 0 {
			errs = append(errs, fmt.Errorf("%s: stall and times must not be negative", where))
		}
		for j, e := range t.Expect {
			if e == "" {
				errs = append(errs, fmt.Errorf("%s: expect[%d]: must not be empty", where, j))
			}
		}
		for j, tu := range t.Tools {
			if tu.Name == "" {
				errs = append(errs, fmt.Errorf("%s: tools[%d].name: required", where, j))
			}
		}
	}
	return errors.Join(errs...)
}

// turnJSON is Turn as it is written in script files: Stall as a duration
// string ("2s"), names in lower case.
type turnJSON struct {
	Text      string    `json:"text,omitempty"`
	Tools     []ToolUse `json:"tools,omitempty"`
	Usage     *Usage    `json:"usage,omitempty"`
	Expect    []string  `json:"expect,omitempty"`
	Error     *APIError `json:"error,omitempty"`
	Stall     string    `json:"stall,omitempty"`
	DropAfter string    `json:"drop_after,omitempty"`
	Times     int       `json:"times,omitempty"`
}

// MarshalJSON writes t as in script files.
func (t Turn) MarshalJSON() ([]byte, error) {
	j := turnJSON{Text: t.Text, Tools: t.Tools, Expect: t.Expect, Error: t.Error, DropAfter: t.DropAfter, Times: t.Times}
	if t.Usage != (Usage{}) {
		j.Usage = &t.Usage
	}
	if t.Stall != 0 {
		j.Stall = t.Stall.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads t as in script files.
func (t *Turn) UnmarshalJSON(b []byte) error {
	var j turnJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*t = Turn{Text: j.Text, Tools: j.Tools, Expect: j.Expect, Error: j.Error, DropAfter: j.DropAfter, Times: j.Times}
	if j.Usage != nil {
		t.Usage = *j.Usage
	}
	if j.Stall != "" {
		d, err := time.ParseDuration(j.Stall)
		if err != nil {
			return fmt.Errorf("stall: %w", err)
		}
		t.Stall = d
	}
	return nil
}

// LoadScript reads a Script from a JSON file and validates it. A script
// without a name is named after the file.
func LoadScript(path string) (Script, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Script{}, fmt.Errorf("reading script: %w", err)
	}
	var s Script
	if err := json.Unmarshal(b, &s); err != nil {
		return Script{}, fmt.Errorf("script %s: %w", path, err)
	}
	if s.Name == "" {
		s.Name = path
	}
	if err := s.Validate(); err != nil {
		return Script{}, fmt.Errorf("script %s: %w", path, err)
	}
	return s, nil
}
