package jobtemplates

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

func TestEmbedded(t *testing.T) {
	t.Parallel()
	c := Embedded()
	require.Equal(t, []string{"default", "readonly"}, c.Names())
	def, ok := c.Get("default")
	require.True(t, ok)
	require.Equal(t, "default", def.Agent.PermissionMode)
	ro, ok := c.Get("readonly")
	require.True(t, ok)
	require.Equal(t, PermissionPlan, ro.Agent.PermissionMode)
	require.Subset(t, ro.Agent.DisallowedTools, []string{"Edit", "Write"})
	_, ok = c.Get("nope")
	require.False(t, ok)
}

func TestGetReturnsACopy(t *testing.T) {
	t.Parallel()
	a, _ := Embedded().Get("default")
	a.Agent.AllowedTools[0] = "Bash"
	a.Resources.Limits[corev1.ResourceMemory] = a.Resources.Limits[corev1.ResourceCPU]
	b, _ := Embedded().Get("default")
	require.Equal(t, "Read", b.Agent.AllowedTools[0])
	require.NoError(t, Validate(b))
}

func TestResolve(t *testing.T) {
	t.Parallel()
	tmpl, err := Embedded().Resolve("readonly")
	require.NoError(t, err)
	require.Equal(t, "readonly", tmpl.Name)
	_, err = Embedded().Resolve("fast")
	require.True(t, errors.Is(err, ErrUnknownTemplate))
	require.EqualError(t, err, `unknown template "fast"; known: default, readonly`)
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
	return dir
}

// An operator directory overrides embedded templates by name and adds new ones.
func TestLoadDirOverridesEmbedded(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"default.yaml": `
description: ops default
runner: {image: "kiln-jobrunner:ops"}
nodeSelector: {pool: builds}
agent: {model: claude-opus-4-1, allowedTools: [Read, Edit, "Bash(make test:*)"]}
`,
		"gpu.yml":      "agent: {allowedTools: [Read]}\ntolerations: [{key: gpu, operator: Exists}]\n",
		"README.md":    "not a template",
		".hidden.yaml": "this: is ignored",
	})
	ops, err := LoadDir(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"default", "gpu"}, ops.Names())

	merged := Embedded().Merge(ops)
	require.Equal(t, []string{"default", "gpu", "readonly"}, merged.Names())
	def, _ := merged.Get("default")
	require.Equal(t, "ops default", def.Description)
	require.Equal(t, "kiln-jobrunner:ops", def.Runner.Image)
	require.Equal(t, map[string]string{"pool": "builds"}, def.NodeSelector)
	require.Equal(t, []string{"Read", "Edit", "Bash(make test:*)"}, def.Agent.AllowedTools)
	require.Equal(t, RequiredDisallowedTools, def.Agent.DisallowedTools, "required disallowed tools are added")

	// Neither input changed.
	orig, _ := Embedded().Get("default")
	require.Equal(t, DefaultImage, orig.Runner.Image)
	require.Equal(t, []string{"default", "gpu"}, ops.Names())

	// A Merge with nothing is a copy.
	require.Equal(t, Embedded().Names(), Embedded().Merge(nil).Names())
}

// A ConfigMap volume holds each key as a link into a timestamped ..data directory.
func TestLoadDirConfigMapLayout(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"..2026_11_26_23_00_00.123/fast.yaml": "agent: {allowedTools: [Read], maxTurns: 5}\n",
	})
	require.NoError(t, os.Symlink("..2026_11_26_23_00_00.123", filepath.Join(dir, "..data")))
	require.NoError(t, os.Symlink("..data/fast.yaml", filepath.Join(dir, "fast.yaml")))
	c, err := LoadDir(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"fast"}, c.Names())
	fast, _ := c.Get("fast")
	require.Equal(t, 5, fast.Agent.MaxTurns)
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{"x.yaml": "agent: {allowedTools: []}\n"})
	_, err := LoadDir(dir)
	require.EqualError(t, err, dir+"/x.yaml: agent.allowedTools: must not be empty")

	_, err = LoadDir(filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "loading templates")

	_, err = Load(fstest.MapFS{"Bad_Name.yaml": {Data: []byte(minimalYAML)}})
	require.ErrorContains(t, err, `Bad_Name.yaml: name: must be a DNS-1123 label`)

	_, err = Load(fstest.MapFS{
		"a.yaml": {Data: []byte(minimalYAML)},
		"a.yml":  {Data: []byte(minimalYAML)},
	})
	require.ErrorContains(t, err, `name: template "a" is defined twice`)

	// Directories ending in .yaml and files in subdirectories are not templates.
	c, err := Load(fstest.MapFS{"d.yaml/x.yaml": {Data: []byte(minimalYAML)}})
	require.NoError(t, err)
	require.Empty(t, c.Names())
}
