package callback

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Headers of a callback request.
const (
	HeaderDeliveryID = "Kiln-Delivery-Id"
	HeaderTimestamp  = "Kiln-Timestamp"
	HeaderSignature  = "Kiln-Signature"
)

// Payload is the JSON body POSTed to a build's callback_url.
type Payload struct {
	TaskID    string              `json:"task_id"`
	ProjectID string              `json:"project_id"`
	Status    schema.Status       `json:"status"`
	Result    *schema.BuildResult `json:"result"`
	Error     string              `json:"error"`
	// Reason is the typed cause of a failed or cancelled build (schema.Reason); absent for a completed one.
	Reason     schema.Reason `json:"reason,omitempty"`
	FinishedAt *time.Time    `json:"finished_at"`
	// ConsoleURL is the build's page in the web console (schema.ConsoleURL);
	// absent when the dispatcher has no public URL (KILN_PUBLIC_URL).
	ConsoleURL string `json:"console_url,omitempty"`
}

// Sign returns the Kiln-Signature value of body sent at timestamp (unix
// seconds): "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
func Sign(secret string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// Defaults of Options; the dispatcher's configuration shows these.
const (
	DefaultTimeout = 10 * time.Second
	DefaultMaxAge  = 24 * time.Hour
)

// Options configures NewWorker.
type Options struct {
	Pool   *pgxpool.Pool // required
	Guard  *Guard        // default: refuse private and special addresses, allow nothing extra
	Logger *slog.Logger  // default: discard
	// Timeout bounds one attempt (connect, send, answer). Default 10s.
	Timeout time.Duration
	// MaxAge is how long after the build finished deliveries are retried.
	// Default 24h.
	MaxAge time.Duration
	// Backoff is the wait before retry n (n ≥ 1). Default 10s·2^(n-1),
	// capped at 1h, with ±10% jitter.
	Backoff func(attempt int) time.Duration
	// OnAttempt is told of each recorded attempt's outcome (metrics); may be nil.
	OnAttempt func(outcome string)
	// PublicURL is the dispatcher's public base URL (KILN_PUBLIC_URL): a
	// payload's console_url links under it. Empty: payloads carry none.
	PublicURL string
}

// Worker delivers callbacks: the River worker of queue.CallbackArgs.
type Worker struct {
	river.WorkerDefaults[queue.CallbackArgs]
	pool      *pgxpool.Pool
	logger    *slog.Logger
	client    *http.Client
	timeout   time.Duration
	maxAge    time.Duration
	backoff   func(int) time.Duration
	onAttempt func(outcome string)
	publicURL string
}

// DefaultBackoff is the production wait before retry n.
func DefaultBackoff(n int) time.Duration {
	d := time.Hour
	if n < 20 {
		d = min(10*time.Second<<(max(n, 1)-1), time.Hour)
	}
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// NewWorker returns a Worker whose HTTP client connects only where Guard allows.
func NewWorker(o Options) (*Worker, error) {
	if o.Pool == nil {
		return nil, errors.New("callback: Pool is required")
	}
	guard := cmp.Or(o.Guard, &Guard{})
	timeout := cmp.Or(o.Timeout, DefaultTimeout)
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: guard.Control}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would connect on our behalf, past the guard
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	backoff := o.Backoff
	if backoff == nil {
		backoff = DefaultBackoff
	}
	return &Worker{
		pool:   o.Pool,
		logger: cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "callback"),
		client: &http.Client{Transport: transport, Timeout: timeout,
			// Redirects are not followed: a receiver cannot bounce us elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		timeout:   timeout,
		maxAge:    cmp.Or(o.MaxAge, DefaultMaxAge),
		backoff:   backoff,
		onAttempt: o.OnAttempt,
		publicURL: o.PublicURL,
	}, nil
}

// Timeout implements river.Worker: one attempt plus recording it.
func (w *Worker) Timeout(*river.Job[queue.CallbackArgs]) time.Duration {
	return w.timeout + 15*time.Second
}

// NextRetry implements river.Worker.
func (w *Worker) NextRetry(job *river.Job[queue.CallbackArgs]) time.Time {
	return time.Now().Add(w.backoff(job.Attempt))
}

// Work delivers one attempt of a build's callback and records it. 2xx ends
// the job; 5xx, 429 and network errors retry (429 after its Retry-After);
// other answers, refused addresses and deliveries older than MaxAge stop it.
func (w *Worker) Work(ctx context.Context, job *river.Job[queue.CallbackArgs]) error {
	args := job.Args
	b, err := store.GetBuild(ctx, w.pool, args.BuildID)
	if errors.Is(err, store.ErrNotFound) {
		return river.JobCancel(fmt.Errorf("build %s is gone", args.BuildID))
	}
	if err != nil {
		return err
	}
	if b.Spec.CallbackURL == "" || !b.Status.Terminal() {
		return river.JobCancel(fmt.Errorf("build %s has no callback to deliver", b.ID))
	}
	done, prev, err := store.CallbackDelivery(ctx, w.pool, args.DeliveryID)
	if err != nil || done {
		return err // done: delivered by an earlier run of this job
	}
	finished := job.CreatedAt
	if b.FinishedAt != nil {
		finished = *b.FinishedAt
	}
	deadline := finished.Add(w.maxAge)
	secret, err := store.ProjectCallbackSecret(ctx, w.pool, b.ProjectID)
	if err != nil {
		return err
	}
	body, err := json.Marshal(Payload{TaskID: b.ID, ProjectID: b.ProjectID, Status: b.Status, Result: b.Result,
		Error: b.Error, Reason: b.Reason, FinishedAt: b.FinishedAt, ConsoleURL: schema.ConsoleURL(w.publicURL, b.ID)})
	if err != nil {
		return river.JobCancel(err)
	}

	a := store.CallbackAttempt{DeliveryID: args.DeliveryID, BuildID: b.ID}
	res := w.send(ctx, b.Spec.CallbackURL, args.DeliveryID, secret, body)
	a.StatusCode, a.Duration, a.Error = res.status, res.duration, res.errText
	log := w.logger.With("build_id", b.ID, "delivery_id", args.DeliveryID, "status_code", res.status, "duration_ms", res.duration.Milliseconds())

	var next time.Duration
	switch {
	case res.status >= 200 && res.status < 300:
		a.Outcome = OutcomeDelivered
	case res.retryAfter > 0:
		// Not sooner than asked, nor sooner than the backoff: a receiver
		// answering 429 with a short Retry-After forever is not hammered.
		next = max(res.retryAfter, w.backoff(prev+1))
	case res.retry && job.Attempt < job.MaxAttempts:
		next = w.backoff(job.Attempt)
	case res.retry:
		a.Error += fmt.Sprintf("; giving up after %d attempts", prev+1)
	}
	if a.Outcome == "" {
		a.Outcome = OutcomeFailed
		if next > 0 {
			a.Outcome = OutcomeRetry
			if time.Now().Add(next).After(deadline) {
				a.Outcome, a.Error = OutcomeFailed, a.Error+fmt.Sprintf("; giving up %s after the build finished", w.maxAge)
			}
		}
	}
	n, rerr := store.RecordCallbackAttempt(context.WithoutCancel(ctx), w.pool, a)
	if rerr != nil {
		log.Error("recording callback attempt", "error", rerr)
	}
	if w.onAttempt != nil {
		w.onAttempt(a.Outcome)
	}
	log = log.With("attempt", n, "outcome", a.Outcome)
	switch a.Outcome {
	case OutcomeDelivered:
		log.Info("callback delivered")
		return nil
	case OutcomeFailed:
		log.Warn("callback failed; not retrying", "error", a.Error)
		return river.JobCancel(errors.New(a.Error))
	}
	level := slog.LevelInfo
	if ctx.Err() != nil {
		level = slog.LevelDebug // cut short by a shutdown: not news, and River runs it again
	}
	log.Log(ctx, level, "callback attempt failed; will retry", "error", a.Error, "in", next)
	if res.retryAfter > 0 {
		return river.JobSnooze(next)
	}
	return errors.New(a.Error)
}

type sendResult struct {
	status     int
	duration   time.Duration
	errText    string
	retry      bool
	retryAfter time.Duration
}

func (w *Worker) send(ctx context.Context, url, deliveryID, secret string, body []byte) sendResult {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return sendResult{errText: "callback_url: " + err.Error()}
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kiln-callback/1")
	req.Header.Set(HeaderDeliveryID, deliveryID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
	start := time.Now()
	resp, err := w.client.Do(req)
	res := sendResult{duration: time.Since(start)}
	if err != nil {
		if errors.Is(err, ErrRefusedAddress) {
			res.errText = "refused: " + refusedReason(err)
			return res
		}
		res.errText, res.retry = "network error: "+trimErr(err), true
		return res
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	res.duration = time.Since(start)
	res.status = resp.StatusCode
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
	case resp.StatusCode == http.StatusTooManyRequests:
		res.errText, res.retry = "HTTP 429 Too Many Requests", true
		res.retryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case resp.StatusCode >= 500:
		res.errText, res.retry = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode)), true
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		res.errText = fmt.Sprintf("HTTP %d: redirects are not followed", resp.StatusCode)
	default:
		res.errText = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return res
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); 0 when
// absent or unreadable. It is at least a second.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return max(time.Duration(n)*time.Second, time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), time.Second)
	}
	return 0
}

func refusedReason(err error) string {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Error()
	}
	return ErrRefusedAddress.Error()
}

// trimErr keeps an error short enough to record.
func trimErr(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
