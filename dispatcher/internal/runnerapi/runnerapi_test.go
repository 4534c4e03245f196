package runnerapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

type env struct {
	t      *testing.T
	srv    *httptest.Server
	pool   *pgtest.DB
	admin  *auth.Principal
	app    *app.App
	tokens map[string]string // build id → runner token
}

func setup(t *testing.T) *env {
	t.Parallel()
	db := pgtest.New(t)
	a, err := app.New(app.Options{Pool: db.Pool, Schema: db.Schema})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background())) // intake's committers write the builds
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, pool: db, app: a, admin: &auth.Principal{Admin: true, Name: "admin"}, tokens: map[string]string{}}
}

// build submits a build, marks it running and gives it a runner token, as a launch does.
func (e *env) build(p *schema.Project) string {
	ctx := context.Background()
	acc, err := e.app.Intake.SubmitBuild(ctx, e.admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.NoError(e.t, err)
	tok, hash := auth.NewToken()
	require.NoError(e.t, store.SetRunnerTokenHash(ctx, e.pool.Pool, acc.Build.ID, hash))
	_, err = store.TransitionBuild(ctx, e.pool.Pool, acc.Build.ID, store.Transition{To: schema.StatusRunning, JobName: "j"})
	require.NoError(e.t, err)
	e.tokens[acc.Build.ID] = tok
	return acc.Build.ID
}

func (e *env) call(method, path, token string, body any, out any) int {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode == 200 {
		if bb, ok := out.(*[]byte); ok {
			*bb = b
		} else {
			require.NoError(e.t, json.Unmarshal(b, out), "%s", b)
		}
	}
	return res.StatusCode
}

func TestRunnerProtocol(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	p, err := e.app.Intake.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "web", PodName: "web-0", GitBranch: "trunk"})
	require.NoError(t, err)
	a, b := e.build(p), e.build(p)
	base := schema.RunnerAPIPrefix

	// A build's token works for that build only.
	var task schema.RunnerTask
	require.Equal(t, 200, e.call("GET", base+a, e.tokens[a], nil, &task))
	assert.Equal(t, a, task.BuildID)
	assert.Equal(t, "web-0", task.Target.PodName)
	assert.Equal(t, "trunk", task.Target.GitBranch)
	assert.Equal(t, 401, e.call("GET", base+b, e.tokens[a], nil, nil), "build A's token is refused for build B")
	assert.Equal(t, 401, e.call("GET", base+a, "", nil, nil))
	assert.Equal(t, 404, e.call("GET", base+"not-a-uuid", e.tokens[a], nil, nil), "not a build id: no such build")

	// Batches are stored once, in order.
	ev := func(text string) schema.EventInput {
		return schema.EventInput{Type: schema.EventAgentText, Time: time.Now(), Payload: json.RawMessage(`{"text":"` + text + `"}`)}
	}
	var ack schema.EventBatchAck
	require.Equal(t, 200, e.call("POST", base+a+"/events", e.tokens[a], schema.EventBatch{Batch: 1, Events: []schema.EventInput{ev("one"), ev("two")}}, &ack))
	assert.Equal(t, schema.EventBatchAck{Stored: 2, Status: schema.StatusRunning}, ack)
	require.Equal(t, 200, e.call("POST", base+a+"/events", e.tokens[a], schema.EventBatch{Batch: 1, Events: []schema.EventInput{ev("one"), ev("two")}}, &ack))
	assert.True(t, ack.Duplicate)
	require.Equal(t, 200, e.call("POST", base+a+"/events", e.tokens[a], schema.EventBatch{Batch: 2, Events: []schema.EventInput{ev("three")}}, &ack))
	evs, err := store.ListEvents(ctx, e.pool.Pool, a, 0, 100)
	require.NoError(t, err)
	var texts []string
	for _, x := range evs {
		if x.Type == schema.EventAgentText {
			texts = append(texts, string(x.Payload))
		}
	}
	assert.Equal(t, []string{`{"text": "one"}`, `{"text": "two"}`, `{"text": "three"}`}, texts)

	// Artifacts: checked, stored, downloadable by the bot and no one else.
	content := []byte("<h1>Welcome</h1>\n")
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	var art schema.Artifact
	require.Equal(t, 200, e.call("POST", base+a+"/artifacts", e.tokens[a], schema.ArtifactUpload{Path: "dist/index.html", SHA256: sha, Size: int64(len(content)), Content: content}, &art))
	assert.Equal(t, schema.Artifact{Name: "index.html", Path: "dist/index.html", Size: int64(len(content)), SHA256: sha, URL: "/builds/" + a + "/artifacts/dist/index.html"}, art)
	for _, bad := range []struct {
		up   schema.ArtifactUpload
		want int
	}{
		{schema.ArtifactUpload{Path: "x", SHA256: strings.Repeat("0", 64), Size: int64(len(content)), Content: content}, 422},
		{schema.ArtifactUpload{Path: "x", SHA256: sha, Size: 3, Content: content}, 422},
		{schema.ArtifactUpload{Path: "../etc/passwd", SHA256: sha, Size: int64(len(content)), Content: content}, 422},
		{schema.ArtifactUpload{Path: "/etc/passwd", SHA256: sha, Size: int64(len(content)), Content: content}, 422},
	} {
		assert.Equal(t, bad.want, e.call("POST", base+a+"/artifacts", e.tokens[a], bad.up, nil), bad.up.Path)
	}
	assert.Equal(t, 401, e.call("POST", base+a+"/artifacts", e.tokens[b], schema.ArtifactUpload{Path: "y", SHA256: sha, Size: int64(len(content)), Content: content}, nil))

	bot, err := auth.Issue(ctx, e.pool.Pool, "bot", false, []string{p.ID})
	require.NoError(t, err)
	other, err := e.app.Intake.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "other"})
	require.NoError(t, err)
	stranger, err := auth.Issue(ctx, e.pool.Pool, "stranger", false, []string{other.ID})
	require.NoError(t, err)
	var got []byte
	require.Equal(t, 200, e.call("GET", art.URL, bot, nil, &got))
	assert.Equal(t, content, got)
	assert.Equal(t, 404, e.call("GET", art.URL, stranger, nil, nil), "another project's token sees nothing")
	assert.Equal(t, 404, e.call("GET", "/builds/"+a+"/artifacts/nope.txt", bot, nil, nil))
	assert.Equal(t, 401, e.call("GET", art.URL, e.tokens[a], nil, nil), "a runner token is not an API token")

	// Results: the first wins; a late one is refused; a stopped runner settles nothing.
	var rack schema.ResultAck
	require.Equal(t, 200, e.call("POST", base+b+"/result", e.tokens[b], schema.BuildResult{Cancelled: true}, &rack))
	assert.Equal(t, schema.ResultAck{Status: schema.StatusRunning, Accepted: false}, rack)
	require.Equal(t, 200, e.call("POST", base+a+"/result", e.tokens[a], schema.BuildResult{Success: true, Output: "ok", Artifacts: []schema.Artifact{art}}, &rack))
	assert.Equal(t, schema.ResultAck{Status: schema.StatusCompleted, Accepted: true}, rack)
	assert.Equal(t, 409, e.call("POST", base+a+"/result", e.tokens[a], schema.BuildResult{Success: false, Error: "late"}, nil),
		"a late result is refused, not ignored with a 200")
	got2, err := store.GetBuild(ctx, e.pool.Pool, a)
	require.NoError(t, err)
	assert.Equal(t, "ok", got2.Result.Output)
	require.Equal(t, 200, e.call("POST", base+b+"/result", e.tokens[b], schema.BuildResult{Success: false}, &rack))
	got2, err = store.GetBuild(ctx, e.pool.Pool, b)
	require.NoError(t, err)
	assert.Equal(t, schema.StatusFailed, got2.Status)
	assert.Equal(t, "the runner reported failure without an error message", got2.Error)
}

// A build cancelled while its runner worked keeps the runner's account: the
// late result is kept (200, not accepted) with its kept work and session,
// the status stays cancelled, and a second late result is refused.
func TestLateResultOfCancelledBuildIsKept(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	p, err := e.app.Intake.CreateProject(ctx, e.admin, schema.ProjectInput{Name: "web", PodName: "web-0"})
	require.NoError(t, err)
	a := e.build(p) // running
	_, err = e.app.Lifecycle.Cancel(ctx, a, "cancelled by the bot")
	require.NoError(t, err)

	res := schema.BuildResult{Cancelled: true, Error: "cancelled: the dispatcher reports the build as terminal",
		SessionID: "0b4f1f9e-6f43-4d8e-9a31-1b1f0b1c2d3e", FilesChanged: []string{"x.go"},
		PartialBranch: schema.KeptWorkBranch(a), PartialCommitSHA: "0123456789abcdef0123456789abcdef01234567"}
	var rack schema.ResultAck
	require.Equal(t, 200, e.call("POST", schema.RunnerAPIPrefix+a+"/result", e.tokens[a], res, &rack))
	assert.Equal(t, schema.ResultAck{Status: schema.StatusCancelled, Accepted: false}, rack)
	got, err := store.GetBuild(ctx, e.pool.Pool, a)
	require.NoError(t, err)
	assert.Equal(t, schema.StatusCancelled, got.Status)
	assert.Equal(t, "cancelled by the bot", got.Error)
	require.NotNil(t, got.Result)
	assert.Equal(t, schema.KeptWorkBranch(a), got.Result.PartialBranch)
	assert.Equal(t, res.SessionID, got.Result.SessionID)

	res.Output = "another"
	assert.Equal(t, 409, e.call("POST", schema.RunnerAPIPrefix+a+"/result", e.tokens[a], res, nil),
		"the build has its account now")
}
