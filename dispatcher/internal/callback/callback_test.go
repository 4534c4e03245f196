package callback_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { apptest.VerifyNoLeaks(m) }

const secret = "kcs_test_secret"

type env struct {
	t       *testing.T
	db      *pgtest.DB
	app     *app.App
	project string
	env     *apptest.Env
}

// setup starts a dispatcher with one River worker whose callback retries
// come after 50ms; allow is the callback allowlist.
func setup(t *testing.T, allow string, opts ...func(*app.Options)) *env {
	t.Helper()
	t.Parallel()
	prefixes, err := callback.ParseAllowlist(allow)
	require.NoError(t, err)
	o := app.Options{Workers: 1, CallbackAllowlist: prefixes, CallbackTimeout: 5 * time.Second,
		CallbackBackoff: func(int) time.Duration { return 50 * time.Millisecond }}
	for _, f := range opts {
		f(&o)
	}
	a := apptest.New(t, o)
	p := a.Project("web", func(p *schema.Project) { p.CallbackSecret = secret })
	return &env{t: t, db: a.DB, app: a.App, project: p.ID, env: a}
}

// finish creates a build calling back url and moves it to completed, which
// enqueues the delivery.
func (e *env) finish(url string) string {
	e.t.Helper()
	id := e.env.Pending(e.project, schema.BuildSpec{Prompt: "p", CallbackURL: url})
	ctx := context.Background()
	ack, err := e.app.Lifecycle.Finish(ctx, id, schema.BuildResult{Success: true, Output: "done", CommitSHA: "abc123"}, "test")
	require.NoError(e.t, err)
	require.True(e.t, ack.Accepted)
	return id
}

// attempts waits until the build's delivery job is finished and returns its attempts.
func (e *env) attempts(id string) []schema.CallbackAttempt {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		var n int
		require.NoError(e.t, e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job
			WHERE kind = 'kiln_callback' AND args->>'build_id' = $1 AND state IN ('completed', 'cancelled', 'discarded')`, id).Scan(&n))
		return n == 1
	}, 30*time.Second, 20*time.Millisecond)
	as, err := store.ListCallbackAttempts(context.Background(), e.db.Pool, id)
	require.NoError(e.t, err)
	return as
}

type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver answers with codes in turn (the last one repeats).
func receiver(t *testing.T, codes ...int) (*httptest.Server, func() []received) {
	var mu sync.Mutex
	var got []received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, received{header: r.Header.Clone(), body: b, at: time.Now()})
		code := codes[min(len(got), len(codes))-1]
		mu.Unlock()
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		if code == http.StatusFound {
			w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []received {
		mu.Lock()
		defer mu.Unlock()
		return append([]received(nil), got...)
	}
}

func TestFlakyReceiverRetriesWithOneDeliveryID(t *testing.T) {
	e := setup(t, "127.0.0.1")
	srv, got := receiver(t, 503, 503, 200)
	id := e.finish(srv.URL + "/hook")
	as := e.attempts(id)

	require.Len(t, as, 3)
	reqs := got()
	require.Len(t, reqs, 3)
	for i, a := range as {
		assert.Equal(t, i+1, a.Attempt)
		assert.Equal(t, as[0].DeliveryID, a.DeliveryID, "one delivery id across retries")
		assert.Equal(t, a.DeliveryID, reqs[i].header.Get(callback.HeaderDeliveryID))
		assert.Equal(t, string(reqs[0].body), string(reqs[i].body), "the body is the same on every retry")
	}
	assert.Equal(t, []int{503, 503, 200}, []int{as[0].StatusCode, as[1].StatusCode, as[2].StatusCode})
	assert.Equal(t, []string{"retry", "retry", "delivered"}, []string{as[0].Outcome, as[1].Outcome, as[2].Outcome})
	assert.Equal(t, "HTTP 503 Service Unavailable", as[0].Error)

	var p callback.Payload
	require.NoError(t, json.Unmarshal(reqs[2].body, &p))
	assert.Equal(t, id, p.TaskID)
	assert.Equal(t, e.project, p.ProjectID)
	assert.Equal(t, schema.StatusCompleted, p.Status)
	require.NotNil(t, p.Result)
	assert.Equal(t, "abc123", p.Result.CommitSHA)
	assert.NotNil(t, p.FinishedAt)
	var keys map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(reqs[2].body, &keys))
	for _, k := range []string{"task_id", "project_id", "status", "result", "error", "finished_at"} {
		assert.Contains(t, keys, k)
	}
	ts := reqs[2].header.Get(callback.HeaderTimestamp)
	assert.Regexp(t, `^[0-9]+$`, ts)
	assert.Regexp(t, `^v1=[0-9a-f]{64}$`, reqs[2].header.Get(callback.HeaderSignature))
}

func TestNoRetryOnClientErrorsAndRedirects(t *testing.T) {
	e := setup(t, "127.0.0.1")
	for _, code := range []int{400, 404, 302} {
		srv, got := receiver(t, code, 200)
		as := e.attempts(e.finish(srv.URL))
		require.Len(t, as, 1, "%d", code)
		assert.Equal(t, "failed", as[0].Outcome)
		assert.Equal(t, code, as[0].StatusCode)
		time.Sleep(200 * time.Millisecond) // retries would come after 50ms
		assert.Len(t, got(), 1, "%d: no retry", code)
	}
}

func TestRetryAfterOn429(t *testing.T) {
	e := setup(t, "127.0.0.1")
	srv, got := receiver(t, 429, 204)
	as := e.attempts(e.finish(srv.URL))
	require.Len(t, as, 2)
	assert.Equal(t, []string{"retry", "delivered"}, []string{as[0].Outcome, as[1].Outcome})
	reqs := got()
	require.Len(t, reqs, 2)
	assert.GreaterOrEqual(t, reqs[1].at.Sub(reqs[0].at), 900*time.Millisecond, "Retry-After: 1 respected")
}

func TestGivesUpAfterMaxAge(t *testing.T) {
	e := setup(t, "127.0.0.1", func(o *app.Options) { o.CallbackMaxAge = time.Millisecond })
	srv, _ := receiver(t, 503)
	as := e.attempts(e.finish(srv.URL))
	require.Len(t, as, 1)
	assert.Equal(t, "failed", as[0].Outcome)
	assert.Contains(t, as[0].Error, "giving up")
}

// Without the allowlist, a loopback receiver is refused when connecting:
// by address and by a name that resolves to loopback.
func TestSSRFRefusedWhenConnecting(t *testing.T) {
	e := setup(t, "")
	srv, got := receiver(t, 200)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	for _, url := range []string{srv.URL, "http://localhost:" + port + "/x", "http://169.254.169.254/latest/meta-data/",
		"http://10.1.2.3:" + port, "http://[::ffff:127.0.0.1]:" + port} {
		as := e.attempts(e.finish(url))
		require.Len(t, as, 1, url)
		assert.Equal(t, "failed", as[0].Outcome, url)
		assert.Zero(t, as[0].StatusCode, url)
		assert.Regexp(t, `^refused: \S+ is (loopback|cloud metadata|private)$`, as[0].Error, url)
	}
	assert.Empty(t, got(), "nothing reached the receiver")
}

func TestGuard(t *testing.T) {
	t.Parallel()
	allow, err := callback.ParseAllowlist("127.0.0.1, 10.20.0.0/16")
	require.NoError(t, err)
	open := &callback.Guard{}
	allowing := &callback.Guard{Allow: allow}
	for addr, why := range map[string]string{
		"127.0.0.1": "loopback", "127.9.9.9": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback",
		"10.0.0.1": "private", "172.16.5.4": "private", "192.168.1.1": "private", "fd12::1": "private (ULA)",
		"169.254.169.254": "cloud metadata", "fd00:ec2::254": "cloud metadata", "169.254.1.1": "link-local",
		"fe80::1": "link-local", "fe80::1%eth0": "link-local", "100.64.0.1": "carrier-grade NAT",
		"224.0.0.1": "multicast", "ff02::1": "multicast", "0.0.0.0": "unspecified", "::": "unspecified",
		"64:ff9b::a00:1": "private", "2002:7f00:1::1": "loopback", "255.255.255.255": "reserved",
	} {
		err := open.Check(netip.MustParseAddr(addr))
		require.ErrorIs(t, err, callback.ErrRefusedAddress, addr)
		assert.Contains(t, err.Error(), "is "+why, addr)
	}
	for _, addr := range []string{"93.184.215.14", "2606:4700::1111", "8.8.8.8"} {
		assert.NoError(t, open.Check(netip.MustParseAddr(addr)), addr)
	}
	assert.NoError(t, allowing.Check(netip.MustParseAddr("127.0.0.1")))
	assert.NoError(t, allowing.Check(netip.MustParseAddr("10.20.3.4")))
	assert.Error(t, allowing.Check(netip.MustParseAddr("10.21.3.4")))
	assert.Error(t, allowing.Check(netip.MustParseAddr("127.0.0.2")))
	_, err = callback.ParseAllowlist("10.0.0.0/33")
	assert.Error(t, err)
	_, err = callback.ParseAllowlist("example.com")
	assert.Error(t, err)
}

// codeBlock returns the first fenced block of lang in docs/callbacks.md that contains marker.
func codeBlock(t *testing.T, lang, marker string) string {
	t.Helper()
	doc, err := os.ReadFile("../../../docs/callbacks.md")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("docs/callbacks.md has no %s block with %q", lang, marker)
	return ""
}

// The Go receiver in docs/callbacks.md, built as it is printed there,
// verifies real deliveries and rejects a forged one.
func TestDocsGoReceiverVerifies(t *testing.T) {
	e := setup(t, "127.0.0.1")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "receiver.go"), []byte(codeBlock(t, "go", "package main")), 0o644))
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "receiver"), filepath.Join(dir, "receiver.go"))
	build.Env = append(os.Environ(), "GO111MODULE=off")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	cmd := exec.Command(filepath.Join(dir, "receiver"))
	cmd.Env = append(os.Environ(), "KILN_CALLBACK_SECRET="+secret, "ADDR="+addr)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	id := e.finish("http://" + addr + "/kiln")
	as := e.attempts(id)
	require.Len(t, as, 1)
	assert.Equal(t, "delivered", as[0].Outcome, as[0].Error)
	assert.Equal(t, 204, as[0].StatusCode)
	select {
	case line := <-lines:
		assert.Equal(t, "build "+id+" completed (delivery "+as[0].DeliveryID+")", line)
	case <-time.After(5 * time.Second):
		t.Fatal("the receiver printed nothing")
	}

	// A forged signature is refused.
	body := `{"task_id":"x","status":"completed"}`
	req, _ := http.NewRequest("POST", "http://"+addr+"/kiln", strings.NewReader(body))
	req.Header.Set(callback.HeaderTimestamp, itoa(time.Now().Unix()))
	req.Header.Set(callback.HeaderSignature, callback.Sign("kcs_wrong", time.Now().Unix(), []byte(body)))
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 401, res.StatusCode)
	// And a correct one from the documented scheme is accepted.
	ts := time.Now().Unix()
	req, _ = http.NewRequest("POST", "http://"+addr+"/kiln", strings.NewReader(body))
	req.Header.Set(callback.HeaderTimestamp, itoa(ts))
	req.Header.Set(callback.HeaderSignature, callback.Sign(secret, ts, []byte(body)))
	req.Header.Set(callback.HeaderDeliveryID, "d-1")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 204, res.StatusCode)
}

// The openssl recipe in docs/callbacks.md agrees with the signature Kiln sends.
func TestDocsShellVerifies(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	script := codeBlock(t, "sh", "openssl")
	dir := t.TempDir()
	body := []byte(`{"task_id":"0193","status":"failed","error":"it broke","result":null}` + "\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "body.json"), body, 0o644))
	ts := time.Now().Unix()
	run := func(sig string) (string, error) {
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TS="+itoa(ts), "SIG="+sig, "KILN_CALLBACK_SECRET="+secret)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := run(callback.Sign(secret, ts, body))
	require.NoError(t, err, out)
	assert.Equal(t, "valid", out)
	out, err = run(callback.Sign("kcs_other", ts, body))
	assert.Error(t, err)
	assert.Equal(t, "INVALID", out)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
