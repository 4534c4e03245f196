package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kustomize cannot read files outside its root, so deploy/base/templates holds
// copies of jobtemplates/templates for the ConfigMap generator. They must stay
// identical: cp jobtemplates/templates/*.yaml deploy/base/templates/
func TestTemplateCopiesMatch(t *testing.T) {
	t.Parallel()
	src := list(t, filepath.Join(root, "jobtemplates/templates"))
	dst := list(t, filepath.Join(root, "deploy/base/templates"))
	require.NotEmpty(t, src)
	assert.Equal(t, keys(src), keys(dst), "same files (cp jobtemplates/templates/*.yaml deploy/base/templates/)")
	for name, body := range src {
		assert.Equal(t, body, dst[name], "deploy/base/templates/%s differs from jobtemplates/templates/%s", name, name)
	}
}

func list(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	out := map[string]string{}
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".yaml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		out[e.Name()] = string(b)
	}
	return out
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
