package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// A dispatcher with a cluster (a fake clientset here: the kubebox tests of
// packages provision and workspace, and tests/e2e, provision for real)
// takes managed projects; every answer matches schema/openapi.yaml and none
// holds a secret.
func setupManaged(t *testing.T) (*env, *fake.Clientset) {
	t.Helper()
	t.Parallel()
	kc := fake.NewClientset()
	logs := &syncBuffer{}
	a := apptest.New(t, app.Options{Workers: 2, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Kube: &app.KubeOptions{Client: kc, Namespace: "kiln-builds", DispatcherURL: "http://127.0.0.1:1",
			AddonURLs: map[string]string{"redis": "redis://default:pw@127.0.0.1:1"}}})
	return &env{t: t, db: a.DB, app: a.App, srv: a.Server, admin: a.Admin, logs: logs, env: a}, kc
}

const managedToken = "ghp_s3cr3t-token-value"

func managedBody(name string) map[string]any {
	return map[string]any{"name": name,
		"repository": map[string]any{"url": "https://git.example/acme/" + name + ".git", "branch": "main",
			"credentials": map[string]any{"username": "bot", "token": managedToken}},
		"workspace": map[string]any{"env": map[string]any{"TZ": "UTC"}, "secret_env": map[string]any{"API_KEY": "sek-value"},
			"resources": map[string]any{"limits": map[string]any{"memory": "1Gi"}}}}
}

func TestManagedProjectAPI(t *testing.T) {
	e, kc := setupManaged(t)
	r := e.do("POST", "/projects", e.admin, managedBody("shop"))
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	var p schema.Project
	r.decode(t, &p)
	assert.Equal(t, "/projects/"+p.ID, r.Header.Get("Location"))
	assert.Equal(t, schema.ProjectProvisioning, p.Status)
	assert.True(t, p.Managed)
	assert.Equal(t, "kiln-shop", p.Namespace)
	assert.Equal(t, "shop-0", p.PodName)
	assert.Equal(t, []string{"API_KEY"}, p.Workspace.SecretEnvKeys)
	assert.Equal(t, "https", p.Repository.Credentials)
	require.NotNil(t, p.Provisioning)
	assert.Equal(t, []string{"namespace", "service_account", "secret", "runner_access", "workspace"}, stepNames(p.Provisioning.Steps))

	// The credentials and secret_env went into the builds namespace's Secret, and nowhere the API shows.
	sec, err := kc.CoreV1().Secrets("kiln-builds").Get(context.Background(), jobtemplates.ProjectSecretName(p.ID), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, managedToken, string(sec.Data[jobtemplates.SecretKeyGitToken]))
	assert.Equal(t, "sek-value", string(sec.Data[jobtemplates.SecretKeyEnvPrefix+"API_KEY"]))

	got := e.do("GET", "/projects/"+p.ID, e.admin, nil)
	require.Equal(t, http.StatusOK, got.Status)
	list := e.do("GET", "/projects", e.admin, nil)
	require.Equal(t, http.StatusOK, list.Status)

	// Its builds wait while it provisions (the fake cluster never runs the pod).
	b := e.submit(p.ID, e.admin, map[string]any{"prompt": "hi"})
	require.Equal(t, http.StatusAccepted, b.Status, "%s", b.Body)

	// Two creates of one name make one project.
	dup := e.do("POST", "/projects", e.admin, managedBody("shop"))
	assert.Equal(t, http.StatusConflict, dup.Status, "%s", dup.Body)

	del := e.do("DELETE", "/projects/"+p.ID, e.admin, nil)
	require.Equal(t, http.StatusAccepted, del.Status, "%s", del.Body)
	var gone schema.Project
	del.decode(t, &gone)
	assert.Equal(t, schema.ProjectDeleting, gone.Status)
	refused := e.submit(p.ID, e.admin, map[string]any{"prompt": "again"})
	assert.Equal(t, http.StatusConflict, refused.Status, "%s", refused.Body)
	assert.Contains(t, string(refused.Body), "deleting")

	require.Eventually(t, func() bool {
		return e.do("GET", "/projects/"+p.ID, e.admin, nil).Status == http.StatusNotFound
	}, 30*time.Second, 100*time.Millisecond, "the project is retired")
	var bd schema.Build
	bg := e.do("GET", "/builds/"+jsonField(t, b.Body, "task_id"), e.admin, nil)
	require.Equal(t, http.StatusOK, bg.Status)
	bg.decode(t, &bd)
	assert.Equal(t, schema.StatusCancelled, bd.Status, "a retired project's pending build is cancelled, and stays readable")
	_, err = kc.CoreV1().Secrets("kiln-builds").Get(context.Background(), jobtemplates.ProjectSecretName(p.ID), metav1.GetOptions{})
	assert.Error(t, err, "the credentials Secret is removed")

	for _, body := range []string{string(r.Body), string(got.Body), string(list.Body), string(del.Body), e.logs.String()} {
		assert.NotContains(t, body, managedToken)
		assert.NotContains(t, body, "sek-value")
	}
	var dump string
	require.NoError(t, e.db.Pool.QueryRow(context.Background(),
		`SELECT coalesce(string_agg(t::text, ' '), '') FROM (SELECT * FROM projects) t`).Scan(&dump))
	assert.NotContains(t, dump, managedToken)
	assert.NotContains(t, dump, "sek-value")
}

func TestManagedProjectRefusedInput(t *testing.T) {
	e, _ := setupManaged(t)
	body := managedBody("bad")
	body["addons"] = []any{map[string]any{"type": "postgres"}}
	body["repository"].(map[string]any)["url"] = "https://bot:" + managedToken + "@git.example/x.git"
	r := e.do("POST", "/projects", e.admin, body)
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s", r.Body)
	p := r.problem(t)
	detail := p["detail"].(string)
	assert.Contains(t, detail, "addons[0].type: add-on \"postgres\" is not configured on this dispatcher (configured: redis)")
	assert.Contains(t, detail, "repository.url: must not carry credentials")
	assert.NotContains(t, string(r.Body), managedToken)

	// A bring-your-own-pod project is ready at once, as before.
	byo := e.do("POST", "/projects", e.admin, map[string]any{"name": "byo", "namespace": "team", "pod_name": "ws-0"})
	require.Equal(t, http.StatusCreated, byo.Status, "%s", byo.Body)
	assert.Contains(t, string(byo.Body), `"status":"ready"`)
}

func stepNames(ss []schema.ProvisioningStep) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Name
	}
	return out
}

func jsonField(t *testing.T, b []byte, key string) string {
	t.Helper()
	s := string(b)
	i := strings.Index(s, `"`+key+`":"`)
	require.GreaterOrEqual(t, i, 0, "%s in %s", key, s)
	s = s[i+len(key)+4:]
	return s[:strings.IndexByte(s, '"')]
}
