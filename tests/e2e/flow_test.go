package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

// callbackReceiver records signed callbacks.
type callbackReceiver struct {
	mu     sync.Mutex
	bodies [][]byte
	heads  []http.Header
}

func (c *callbackReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.bodies = append(c.bodies, b)
	c.heads = append(c.heads, r.Header.Clone())
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// The whole flow with every real part: a bot submits over HTTP, the
// dispatcher (with its least-privilege role) launches a Job, the real
// jobrunner execs the (stand-in) agent in the project's pod over the
// Kubernetes exec API, the runner's git step commits and pushes to a real
// remote, the result lands in the audit trail, events stream in order, and a
// signed callback reaches the bot.
func TestWholeFlow(t *testing.T) {
	e := newEnvIn(t, harness.RunnerNamespace, "KILN_RUNNER_IMAGE="+harness.ImageRunner, "KILN_CALLBACK_ALLOWLIST=127.0.0.1/32")
	hn := &harness.Env{Bin: runnerBins, Cluster: cluster, Client: cluster.Client}
	proj := hn.NewProject(t, "flow", harness.ProjectOptions{})
	d := e.start()
	recv := &callbackReceiver{}
	cb := httptest.NewServer(recv)
	t.Cleanup(cb.Close)

	p := e.createProject(d, schema.ProjectInput{
		Name: "flow", Namespace: proj.Namespace, PodName: proj.Pod, Container: "main", Workdir: proj.Workdir,
		GitRemote: "origin", GitBranch: "main", AuthorName: "Kiln Bot", AuthorEmail: "bot@kiln.example",
	})
	proj.API.Enqueue(harness.EditScript(proj, "index.html", "<h1>Hello</h1>", "<h1>Welcome to Acme</h1>",
		`The heading in index.html now reads "Welcome to Acme".`))
	id := e.submit(d, p.ID, schema.BuildSpec{
		Prompt:    "Change the heading for {{ ticket }} to \"Welcome to Acme\".",
		Variables: map[string]string{"ticket": "ACME-7"}, Template: "site",
		AutoCommit: true, AutoPush: true, CallbackURL: cb.URL + "/kiln",
	})
	b := e.waitStatus(d, id, 120*time.Second, schema.StatusCompleted, schema.StatusFailed)
	require.Equal(t, schema.StatusCompleted, b.Status, b.Error)
	r := b.Result
	require.NotNil(t, r)
	assert.True(t, r.Success)
	assert.Equal(t, []string{"index.html"}, r.FilesChanged)
	assert.Len(t, r.CommitSHA, 40)
	assert.Contains(t, r.Output, "Welcome to Acme")
	assert.Positive(t, r.DurationMS)
	require.NotNil(t, r.Usage)
	assert.Positive(t, r.Usage.CostUSD)

	// The artifact the template asks for was uploaded and downloads intact.
	require.Len(t, r.Artifacts, 1)
	art := r.Artifacts[0]
	assert.Equal(t, "index.html", art.Path)
	assert.Equal(t, schema.ArtifactURL(id, "index.html"), art.URL)
	downloaded, err := d.api.Artifact(context.Background(), id, art.Path)
	require.NoError(t, err)
	sum := sha256.Sum256(downloaded)
	assert.Equal(t, art.SHA256, hex.EncodeToString(sum[:]))
	assert.Contains(t, string(downloaded), "Welcome to Acme")

	// The commit is in the remote, by the configured author, naming the build.
	remoteHead := proj.Git(t, proj.Remote, "rev-parse", "refs/heads/main")
	assert.Equal(t, r.CommitSHA, remoteHead)
	assert.Equal(t, "Kiln Bot <bot@kiln.example>", proj.Git(t, proj.Remote, "log", "-1", "--format=%an <%ae>", "main"))
	assert.Contains(t, proj.Git(t, proj.Remote, "log", "-1", "--format=%B", "main"), "Kiln-Build-Id: "+id)
	assert.Equal(t, "index.html", proj.Git(t, proj.Remote, "show", "--format=", "--name-only", "main"))
	assert.Contains(t, proj.Git(t, proj.Remote, "show", "main:index.html"), "Welcome to Acme")

	// Events: ordered, from pending through the agent's work and git to completed.
	evs := e.events(d, id)
	var types []string
	for i, ev := range evs {
		require.Equal(t, int64(i+1), ev.Seq)
		types = append(types, string(ev.Type))
	}
	joined := strings.Join(types, ",")
	for _, want := range []string{"status", "agent_text", "tool_call", "tool_result", "git"} {
		assert.Contains(t, joined, want)
	}
	assert.Equal(t, schema.StatusCompleted, lastStatus(t, evs).Status)

	// The signed callback arrived; a receiver checks it as docs/callbacks.md says.
	kbtest.WaitFor(t, 30*time.Second, "callback", func(context.Context) (bool, error) {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		return len(recv.bodies) > 0, nil
	})
	recv.mu.Lock()
	body, h := recv.bodies[0], recv.heads[0]
	recv.mu.Unlock()
	mac := hmac.New(sha256.New, []byte(p.CallbackSecret))
	mac.Write([]byte(h.Get("Kiln-Timestamp") + "." + string(body)))
	assert.Equal(t, "v1="+hex.EncodeToString(mac.Sum(nil)), h.Get("Kiln-Signature"))
	assert.NotEmpty(t, h.Get("Kiln-Delivery-Id"))
	var payload struct {
		TaskID string             `json:"task_id"`
		Status schema.Status      `json:"status"`
		Result schema.BuildResult `json:"result"`
	}
	require.NoError(t, json.Unmarshal(body, &payload))
	assert.Equal(t, id, payload.TaskID)
	assert.Equal(t, schema.StatusCompleted, payload.Status)
	assert.Equal(t, r.CommitSHA, payload.Result.CommitSHA)

	// Cancel while the model is slow to answer: the agent's processes are
	// gone from the pod, no commit, cancelled.
	before := proj.Git(t, proj.Remote, "rev-parse", "refs/heads/main")
	pod := proj.AgentProcs(nil) // the pod's own process
	proj.API.Enqueue(harness.StallScript())
	slow := e.submit(d, p.ID, schema.BuildSpec{Prompt: "Think it over.", AutoCommit: true, AutoPush: true})
	e.waitStatus(d, slow, 60*time.Second, schema.StatusRunning)
	kbtest.WaitFor(t, 60*time.Second, "the agent waiting for the model", func(context.Context) (bool, error) {
		for _, r := range proj.API.Requests() {
			if r.Stalled && r.InFlight {
				return true, nil
			}
		}
		return false, nil
	})
	running := proj.AgentProcs(pod)
	require.NotEmpty(t, running)
	e.cancel(d, slow, "superseded")
	kbtest.WaitFor(t, 60*time.Second, "the agent's processes gone", func(context.Context) (bool, error) {
		return len(proj.AgentProcs(pod)) == 0, nil
	})
	// The stopped runner's account comes once its git work is over (it
	// looks for changes to keep): only then is the workspace left alone.
	kbtest.WaitFor(t, 60*time.Second, "the stopped runner's account", func(context.Context) (bool, error) {
		return e.get(d, slow).Result != nil, nil
	})
	b = e.get(d, slow)
	assert.Equal(t, schema.StatusCancelled, b.Status)
	assert.Equal(t, "superseded", b.Error)
	assert.False(t, b.Result.Success)
	assert.Empty(t, b.Result.PartialBranch, "the agent changed nothing: nothing kept")
	assert.Equal(t, before, proj.Git(t, proj.Remote, "rev-parse", "refs/heads/main"), "a cancelled build pushes nothing")
}
