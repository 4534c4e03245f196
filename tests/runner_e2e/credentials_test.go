package runner_e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/gitserver"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

// privateProject is a project whose workspace is a clone of a repository
// on a token-checking git server (origin is the plain URL, as the managed
// workspace's clone leaves it), and whose credentials Secret the test made
// as the dispatcher would, holding secretToken.
type privateProject struct {
	*harness.Project
	srv  *gitserver.Server
	url  string
	repo *schema.Repository
}

const gitToken = "ghp-e2e-s3cr3t-t0ken"

func newPrivateProject(t *testing.T, env *harness.Env, name, secretToken string) *privateProject {
	t.Helper()
	p := env.NewProject(t, name, harness.ProjectOptions{})
	srv := gitserver.Start(t, gitserver.Options{Username: "kiln", Token: gitToken})
	url := srv.NewRepo(t, "acme/"+name, "main", map[string]string{
		"index.html": "<!doctype html>\n<title>Acme</title>\n<h1>Hello</h1>\n", ".gitignore": "dist/\n"})

	// The workspace becomes a clone of the private repository (the test's
	// own clone gives git the token through a helper reading its environment).
	entries, err := os.ReadDir(p.Workdir)
	require.NoError(t, err)
	for _, e := range entries {
		require.NoError(t, os.RemoveAll(filepath.Join(p.Workdir, e.Name())))
	}
	cmd := exec.Command("git", "-c", "credential.helper=",
		"-c", `credential.helper=!f() { test "$1" = get || exit 0; echo username=kiln; echo "password=$E2E_TOKEN"; }; f`,
		"clone", "--quiet", url, p.Workdir)
	cmd.Env = append(harness.GitEnv(p.Home), "E2E_TOKEN="+gitToken, "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "clone: %s", out)

	// The project's credentials Secret, as the dispatcher keeps it in the
	// builds namespace; its secret_env key must not reach the build's pod.
	_, err = env.Client.CoreV1().Secrets(harness.RunnerNamespace).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: jobtemplates.ProjectSecretName(harness.ProjectID(p)), Namespace: harness.RunnerNamespace},
		Data: map[string][]byte{
			jobtemplates.SecretKeyGitUsername:             []byte("kiln"),
			jobtemplates.SecretKeyGitToken:                []byte(secretToken),
			jobtemplates.SecretKeyEnvPrefix + "NPM_TOKEN": []byte("npm-e2e-secret-env"),
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return &privateProject{Project: p, srv: srv, url: url,
		repo: &schema.Repository{URL: url, Branch: "main", Credentials: schema.CredentialsHTTPS, Username: "kiln"}}
}

func (p *privateProject) target() *schema.Target {
	t := p.Target()
	t.GitRemote = "origin"
	return &t
}

// requireNoSecret checks that none of the secrets shows in what the build
// left: its events, its results, the runner's log and pod, the project's pod
// and the clone's configuration.
func (p *privateProject) requireNoSecret(t *testing.T, env *harness.Env, b harness.Build, runnerPod *corev1.Pod, secrets ...string) {
	t.Helper()
	ctx := context.Background()
	events, err := json.Marshal(b.Batches)
	require.NoError(t, err)
	results, err := json.Marshal(b.ResultPosts)
	require.NoError(t, err)
	projectPod, err := env.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Pod, metav1.GetOptions{})
	require.NoError(t, err)
	projectSpec, err := json.Marshal(projectPod.Spec)
	require.NoError(t, err)
	runnerSpec, err := json.Marshal(runnerPod.Spec)
	require.NoError(t, err)
	config, err := os.ReadFile(filepath.Join(p.Workdir, ".git", "config"))
	require.NoError(t, err)
	for what, text := range map[string]string{
		"events": string(events), "results": string(results), "runner log": env.Logs(runnerPod),
		"project pod spec": string(projectSpec), "runner pod spec": string(runnerSpec), ".git/config": string(config),
		"termination message": runnerPod.Status.ContainerStatuses[0].State.Terminated.Message,
	} {
		for _, s := range secrets {
			require.NotContains(t, text, s, "a secret in the %s", what)
		}
	}
	require.Contains(t, string(config), "url = "+p.url+"\n", "the remote URL is the plain one")
	for _, v := range projectPod.Spec.Volumes {
		require.Nil(t, v.Secret, "the project pod mounts no Secret")
	}
}

// testPrivateRepo: a managed project's build fetches and pushes with the
// token from the project's Secret, which reaches no event, result, log, pod
// spec or .git/config.
func testPrivateRepo(t *testing.T, env *harness.Env) {
	p := newPrivateProject(t, env, "private", gitToken)
	before := p.srv.Head(t, "acme/private", "main")
	seen := len(p.srv.Requests()) // the test's own clone
	id := "b-private-1"
	p.API.Enqueue(harness.EditScript(p.Project, "index.html", "<h1>Hello</h1>", "<h1>Welcome to Acme</h1>", "Updated the heading."))
	job := env.StartBuild(t, p.Project, id, schema.BuildSpec{Prompt: "Change the heading.", AutoCommit: true, AutoPush: true},
		harness.BuildOptions{Target: p.target(), Repository: p.repo})
	pod := env.WaitJobPod(t, job, 2*time.Minute)
	b := env.Dispatcher.Get(id)
	require.Len(t, b.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
	res := b.ResultPosts[0]
	require.True(t, res.Success, "%s\nrunner log:\n%s", res.Error, env.Logs(pod))
	require.Len(t, res.CommitSHA, 40)
	head := p.srv.Head(t, "acme/private", "main")
	require.NotEqual(t, before, head)
	require.Equal(t, res.CommitSHA, head, "the server's branch moved to the build's commit")

	// The runner's pod mounts only the two HTTPS keys, read-only.
	var mounted []string
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == jobtemplates.ProjectSecretName(harness.ProjectID(p.Project)) {
			for _, it := range v.Secret.Items {
				mounted = append(mounted, it.Key)
			}
		}
	}
	require.ElementsMatch(t, []string{jobtemplates.SecretKeyGitUsername, jobtemplates.SecretKeyGitToken}, mounted)

	// The fetch and the push were let in with the token; nothing was refused.
	var fetch, push bool
	for _, r := range p.srv.Requests()[seen:] {
		require.True(t, r.Authenticated || r.User == "", "a request with wrong credentials: %+v", r)
		fetch = fetch || r.Authenticated && r.Service == "git-upload-pack"
		push = push || r.Authenticated && r.Service == "git-receive-pack"
	}
	require.True(t, fetch, "Prepare fetched with the token")
	require.True(t, push, "the git step pushed with the token")
	p.requireNoSecret(t, env, b, pod, gitToken, "npm-e2e-secret-env")
}

// testPrivateRepoWrongToken: with a wrong token in the Secret the fetch is
// refused with git's message, the build fails as a workspace failure, and
// the wrong token shows nowhere either.
func testPrivateRepoWrongToken(t *testing.T, env *harness.Env) {
	const wrong = "ghp-e2e-wr0ng-t0ken"
	p := newPrivateProject(t, env, "private-bad", wrong)
	before := p.srv.Head(t, "acme/private-bad", "main")
	id := "b-private-bad-1"
	job := env.StartBuild(t, p.Project, id, schema.BuildSpec{Prompt: "Change the heading.", AutoCommit: true, AutoPush: true},
		harness.BuildOptions{Target: p.target(), Repository: p.repo})
	pod := env.WaitJobPod(t, job, 2*time.Minute)
	b := env.Dispatcher.Get(id)
	require.Len(t, b.ResultPosts, 1, "runner log:\n%s", env.Logs(pod))
	res := b.ResultPosts[0]
	require.False(t, res.Success)
	require.Equal(t, schema.ReasonWorkspace, res.Reason, res.Error)
	require.Contains(t, res.Error, "Authentication failed")
	require.True(t, strings.HasPrefix(res.Error, "preparing the workspace: fetching main from origin:"), res.Error)
	require.Equal(t, before, p.srv.Head(t, "acme/private-bad", "main"))
	require.Empty(t, p.API.Requests(), "the agent never ran")
	var refused bool
	for _, r := range p.srv.Requests() {
		refused = refused || !r.Authenticated && r.User == "kiln" && r.Service == "git-upload-pack"
	}
	require.True(t, refused, "the fetch presented the Secret's (wrong) credentials and was refused")
	p.requireNoSecret(t, env, b, pod, wrong, gitToken, "npm-e2e-secret-env")
}
