package intake

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

var testDefaults = &WorkspaceDefaults{Image: "kilnbuild/kiln-workspace:latest", Env: map[string]string{"PATH": "/usr/bin", "TZ": "UTC"},
	AddonTypes: []string{"postgres"}, AllAddonTypes: []string{"postgres", "redis"}, BuildsNamespace: "kiln-builds",
	Container: "workspace", Workdir: "/workspace/repo",
	Steps: func([]string) []string { return nil },
	AddonEnv: func(t string) []string {
		return map[string][]string{"postgres": {"DATABASE_URL"}, "redis": {"REDIS_URL"}}[t]
	}}

func managedInput(edit func(*schema.ProjectInput)) schema.ProjectInput {
	in := schema.ProjectInput{Name: "web", Repository: &schema.RepositoryInput{URL: "https://git.example/acme/web.git", Branch: "main",
		Credentials: &schema.Credentials{Username: "bot", Token: "tok"}}}
	if edit != nil {
		edit(&in)
	}
	return in
}

func ruleOf(t *testing.T, err error) map[string]string {
	t.Helper()
	var v ValidationError
	require.True(t, errors.As(err, &v), "%v", err)
	out := map[string]string{}
	for _, fe := range v {
		out[fe.Field] = fe.Rule
	}
	return out
}

func TestManagedProjectDefaults(t *testing.T) {
	t.Parallel()
	p, m, err := normalizeProject(managedInput(func(in *schema.ProjectInput) {
		in.Workspace = &schema.WorkspaceInput{Env: map[string]string{"TZ": "Europe/Paris"}, SecretEnv: map[string]string{"API_KEY": "s3cret", "PATH": "/x"}}
		in.Addons = []schema.AddonInput{{Type: "postgres"}}
	}), "", testDefaults)
	require.NoError(t, err)
	assert.Equal(t, "kiln-web", p.Namespace)
	assert.Equal(t, "web-0", p.PodName)
	assert.Equal(t, "workspace", p.Container)
	assert.Equal(t, "/workspace/repo", p.Workdir)
	assert.Equal(t, "origin", p.GitRemote)
	assert.Equal(t, "main", p.GitBranch)
	assert.Equal(t, schema.Repository{URL: "https://git.example/acme/web.git", Branch: "main", Credentials: "https", Username: "bot"}, m.Repository)
	assert.Equal(t, "kilnbuild/kiln-workspace:latest", m.Workspace.Image)
	// The project's env overrides the default; a default a secret replaces is dropped.
	assert.Equal(t, map[string]string{"TZ": "Europe/Paris"}, m.Workspace.Env)
	assert.Equal(t, []string{"API_KEY", "PATH"}, m.Workspace.SecretEnvKeys)
	assert.Equal(t, []string{"postgres"}, m.Addons)
	assert.NotContains(t, strings.Join([]string{m.Repository.URL, m.Repository.Username}, " "), "tok")
}

func TestManagedProjectLongNameGetsAHashedNamespace(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("a", 63)
	p, _, err := normalizeProject(managedInput(func(in *schema.ProjectInput) { in.Name = name }), "", testDefaults)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(p.Namespace), 63)
	assert.True(t, strings.HasPrefix(p.Namespace, "kiln-aaa"))
	assert.True(t, dnsLabel.MatchString(p.Namespace), p.Namespace)
}

func TestManagedProjectRefusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		edit  func(*schema.ProjectInput)
		field string
		rule  string
	}{
		{"no url", func(in *schema.ProjectInput) { in.Repository.URL = "" }, "repository.url", "required"},
		{"no branch", func(in *schema.ProjectInput) { in.Repository.Branch = "" }, "repository.branch", "required"},
		{"bad branch", func(in *schema.ProjectInput) { in.Repository.Branch = "a..b" }, "repository.branch", "valid git branch"},
		{"token in url", func(in *schema.ProjectInput) { in.Repository.URL = "https://bot:tok@git.example/x.git" }, "repository.url", "must not carry credentials"},
		{"file url", func(in *schema.ProjectInput) { in.Repository.URL = "file:///etc" }, "repository.url", "https://, http://, ssh://"},
		{"option url", func(in *schema.ProjectInput) { in.Repository.URL = "--upload-pack=evil" }, "repository.url", "must not start with '-'"},
		{"both kinds", func(in *schema.ProjectInput) { in.Repository.Credentials.SSHPrivateKey = "x" }, "repository.credentials", "not both"},
		{"empty creds", func(in *schema.ProjectInput) { in.Repository.Credentials = &schema.Credentials{} }, "repository.credentials", "leave credentials out"},
		{"user without token", func(in *schema.ProjectInput) { in.Repository.Credentials.Token = "" }, "repository.credentials.token", "required"},
		{"token for ssh", func(in *schema.ProjectInput) { in.Repository.URL = "git@git.example:acme/web.git" }, "repository.credentials.token", "ssh URL"},
		{"ssh without known_hosts", func(in *schema.ProjectInput) {
			in.Repository.URL = "ssh://git@git.example/acme/web.git"
			in.Repository.Credentials = &schema.Credentials{SSHPrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"}
		}, "repository.credentials.known_hosts", "required"},
		{"pod_name", func(in *schema.ProjectInput) { in.PodName = "mine" }, "pod_name", "Kiln creates"},
		{"other branch", func(in *schema.ProjectInput) { in.GitBranch = "dev" }, "git_branch", "repository.branch"},
		{"unknown addon", func(in *schema.ProjectInput) { in.Addons = []schema.AddonInput{{Type: "mongo"}} }, "addons[0].type", `unknown add-on type "mongo" (known: postgres, redis)`},
		{"unconfigured addon", func(in *schema.ProjectInput) { in.Addons = []schema.AddonInput{{Type: "redis"}} }, "addons[0].type", "not configured on this dispatcher (configured: postgres)"},
		{"addon twice", func(in *schema.ProjectInput) { in.Addons = []schema.AddonInput{{Type: "postgres"}, {Type: "postgres"}} }, "addons[1].type", "twice"},
		{"env name", func(in *schema.ProjectInput) {
			in.Workspace = &schema.WorkspaceInput{Env: map[string]string{"1BAD": "x"}}
		}, "workspace.env", "not an environment variable name"},
		{"reserved env", func(in *schema.ProjectInput) {
			in.Workspace = &schema.WorkspaceInput{SecretEnv: map[string]string{"KILN_X": "x"}}
		}, "workspace.secret_env", "set by Kiln"},
		{"addon's variable", func(in *schema.ProjectInput) {
			in.Addons = []schema.AddonInput{{Type: "postgres"}}
			in.Workspace = &schema.WorkspaceInput{Env: map[string]string{"DATABASE_URL": "x"}}
		}, "workspace.env", "set by the postgres add-on"},
		{"env and secret", func(in *schema.ProjectInput) {
			in.Workspace = &schema.WorkspaceInput{Env: map[string]string{"K": "a"}, SecretEnv: map[string]string{"K": "b"}}
		}, "workspace.secret_env", "also in env"},
		{"bad quantity", func(in *schema.ProjectInput) {
			in.Workspace = &schema.WorkspaceInput{Resources: &schema.Resources{Limits: map[string]string{"memory": "lots"}}}
		}, "workspace.resources.limits.memory", "Kubernetes quantity"},
		{"requests over limits", func(in *schema.ProjectInput) {
			in.Workspace = &schema.WorkspaceInput{Resources: &schema.Resources{Requests: map[string]string{"cpu": "2"}, Limits: map[string]string{"cpu": "1"}}}
		}, "workspace.resources.requests.cpu", "must not exceed"},
		{"gpu", func(in *schema.ProjectInput) {
			in.Workspace = &schema.WorkspaceInput{Resources: &schema.Resources{Limits: map[string]string{"nvidia.com/gpu": "1"}}}
		}, "workspace.resources.limits", "only cpu and memory"},
		{"image", func(in *schema.ProjectInput) { in.Workspace = &schema.WorkspaceInput{Image: "Bad Image"} }, "workspace.image", "image reference"},
		{"addons without repository", func(in *schema.ProjectInput) {
			in.Repository = nil
			in.Addons = []schema.AddonInput{{Type: "postgres"}}
		}, "repository", "required with workspace or addons"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := normalizeProject(managedInput(c.edit), "", testDefaults)
			rules := ruleOf(t, err)
			assert.Contains(t, rules[c.field], c.rule, "%v", rules)
			assert.NotContains(t, err.Error(), "tok\"", "no error echoes the token")
		})
	}
}

// A dispatcher without a cluster refuses managed projects, saying why.
func TestManagedProjectNeedsACluster(t *testing.T) {
	t.Parallel()
	_, err := NormalizeProject(managedInput(nil), "project.")
	assert.Contains(t, ruleOf(t, err)["project.repository"], "need a dispatcher connected to a cluster")
}
