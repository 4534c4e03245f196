// Package harness sets up what the runner's end-to-end tests need on
// kubebox: the jobrunner binary and the pinned Claude Code CLI, a project
// pod whose workdir is a git clone of a bare repository and whose CLI talks
// to its own stand-in Messages API (tests/messagesapi), the runner's least-privilege
// RBAC, the build's Job rendered by jobtemplates, and a stand-in dispatcher
// that speaks the runner protocol (schema/runner.go) over real HTTP. For
// tests only; the dispatcher+runner end-to-end tests can reuse all but the
// stand-in dispatcher.
package harness

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/schema"
)

// Dispatcher is a stand-in for the dispatcher's runner API: it serves
// tasks, stores event batches once each and keeps every result post. After
// the build is terminal it answers as the dispatcher does: 409 to events,
// artifacts and results, but 200 duplicate to the accepted result again.
type Dispatcher struct {
	URL string

	mu     sync.Mutex
	builds map[string]*Build
	cond   *sync.Cond
}

// Build is the stand-in dispatcher's record of one build.
type Build struct {
	Task   schema.RunnerTask
	Token  string
	Status schema.Status
	// Batches are the stored batches in the order stored (numbers 1, 2, ...).
	Batches []schema.EventBatch
	// BatchPosts counts every events post, duplicates included.
	BatchPosts, Duplicates, Gaps int
	// TaskGets counts GETs of the task.
	TaskGets int
	// ResultPosts are every result post's body; Accepted is the first, the one stored.
	ResultPosts []schema.BuildResult
	Accepted    *schema.BuildResult
	ResultAt    time.Time
	// DropResults makes result posts fail at the network level (connection closed).
	DropResults bool
	// Refused counts posts answered 409 because the build was terminal.
	Refused int
	// Artifacts are the uploaded files by path.
	Artifacts map[string][]byte
}

// Events returns the stored events in order.
func (b *Build) Events() []schema.EventInput {
	var out []schema.EventInput
	for _, bt := range b.Batches {
		out = append(out, bt.Events...)
	}
	return out
}

// NewDispatcher starts the stand-in on 127.0.0.1 (kubebox pods share the host network).
func NewDispatcher(t testing.TB) *Dispatcher {
	d := &Dispatcher{builds: map[string]*Build{}}
	d.cond = sync.NewCond(&d.mu)
	srv := httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(srv.Close)
	d.URL = srv.URL
	return d
}

// Add registers a running build and its token.
func (d *Dispatcher) Add(task schema.RunnerTask, token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	task.Status = schema.StatusRunning
	d.builds[task.BuildID] = &Build{Task: task, Token: token, Status: schema.StatusRunning}
}

// Update changes a build's record under the lock.
func (d *Dispatcher) Update(id string, f func(*Build)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d.builds[id])
	d.cond.Broadcast()
}

// Get returns a copy of a build's record.
func (d *Dispatcher) Get(id string) Build {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := *d.builds[id]
	b.Batches = append([]schema.EventBatch(nil), b.Batches...)
	b.ResultPosts = append([]schema.BuildResult(nil), b.ResultPosts...)
	return b
}

// WaitResult waits for a build's first result post.
func (d *Dispatcher) WaitResult(t testing.TB, id string, timeout time.Duration) Build {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b := d.Get(id)
		if len(b.ResultPosts) > 0 {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("no result for build %s after %s (status %s, %d batches)", id, timeout, b.Status, len(b.Batches))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, code int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"title": http.StatusText(code), "status": code, "detail": detail})
}

func (d *Dispatcher) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, schema.RunnerAPIPrefix)
	if !ok {
		problem(w, 404, "not found")
		return
	}
	id, action, _ := strings.Cut(rest, "/")
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.cond.Broadcast()
	b := d.builds[id]
	if b == nil || r.Header.Get("Authorization") != "Bearer "+b.Token {
		// The same answer for an unknown build and a wrong token.
		problem(w, 401, "runner token not valid for this build")
		return
	}
	switch {
	case r.Method == http.MethodGet && action == "":
		b.TaskGets++
		task := b.Task
		task.Status = b.Status
		writeJSON(w, 200, task)
	case r.Method == http.MethodPost && action == "events":
		var batch schema.EventBatch
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			problem(w, 400, "body: "+err.Error())
			return
		}
		b.BatchPosts++
		if b.Status.Terminal() {
			b.Refused++
			problem(w, 409, "build is "+string(b.Status)+"; events are not accepted after the build ended")
			return
		}
		switch {
		case batch.Batch >= 1 && batch.Batch <= int64(len(b.Batches)):
			b.Duplicates++
			writeJSON(w, 200, schema.EventBatchAck{Stored: 0, Duplicate: true, Status: b.Status})
		case batch.Batch == int64(len(b.Batches))+1:
			b.Batches = append(b.Batches, batch)
			writeJSON(w, 200, schema.EventBatchAck{Stored: len(batch.Events), Status: b.Status})
		default:
			b.Gaps++
			problem(w, 422, "batch: must follow the last stored batch")
		}
	case r.Method == http.MethodPost && action == "artifacts":
		var up schema.ArtifactUpload
		if err := json.NewDecoder(r.Body).Decode(&up); err != nil {
			problem(w, 400, "body: "+err.Error())
			return
		}
		if b.Status.Terminal() {
			b.Refused++
			problem(w, 409, "build is "+string(b.Status)+"; artifacts are not accepted after the build ended")
			return
		}
		if b.Artifacts == nil {
			b.Artifacts = map[string][]byte{}
		}
		b.Artifacts[up.Path] = up.Content
		writeJSON(w, 200, schema.Artifact{Name: path.Base(up.Path), Path: up.Path, Size: up.Size, SHA256: up.SHA256,
			URL: schema.ArtifactURL(b.Task.BuildID, up.Path)})
	case r.Method == http.MethodPost && action == "result":
		var res schema.BuildResult
		if err := json.NewDecoder(r.Body).Decode(&res); err != nil {
			problem(w, 400, "body: "+err.Error())
			return
		}
		b.ResultPosts = append(b.ResultPosts, res)
		if b.DropResults {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.(*net.TCPConn).SetLinger(0)
					conn.Close()
					return
				}
			}
		}
		if b.Status.Terminal() {
			if b.Accepted != nil && reflect.DeepEqual(*b.Accepted, res) {
				writeJSON(w, 200, schema.ResultAck{Status: b.Status, Accepted: true, Duplicate: true})
				return
			}
			b.Refused++
			problem(w, 409, "build is "+string(b.Status)+"; it ended before this result came, which is not recorded")
			return
		}
		b.Accepted = &res
		b.ResultAt = time.Now()
		switch {
		case res.Cancelled:
			b.Status = schema.StatusCancelled
		case res.Success:
			b.Status = schema.StatusCompleted
		default:
			b.Status = schema.StatusFailed
		}
		writeJSON(w, 200, schema.ResultAck{Status: b.Status, Accepted: true})
	default:
		problem(w, 405, "method not allowed")
	}
}
