package intake

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// gitTakesBranch asks the real git whether name is a branch name it takes.
func gitTakesBranch(t testing.TB, name string) bool {
	t.Helper()
	err := exec.Command("git", "check-ref-format", "--branch", name).Run()
	if _, exit := err.(*exec.ExitError); err != nil && !exit {
		require.NoError(t, err, "running git")
	}
	return err == nil
}

// Whatever checkBranch accepts, git takes as a branch name (with {task_id}
// replaced by an id); where git refuses a name, so does checkBranch.
func TestCheckBranchAgreesWithGit(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"review/x", "bot/{task_id}", "feature/a-b_c.d", "a", "x/y/z", "{task_id}", "release-1.2", "ü/ß",
		"a b", "a..b", "a@{1}", "@", "a/.b", ".a", "a.lock", "a/b.lock", "-a", "/a", "a/", "a.", "a//b", "a~1",
		"a^", "a:b", "a?", "a*", "a[b", "a\\b", "a\tb", "a\x7f", "a/.", "a/..", "HEAD", "kiln/x", "kiln/{task_id}",
	} {
		rule := checkBranch(name)
		if rule != "" {
			continue
		}
		resolved := strings.ReplaceAll(name, schema.TaskIDPlaceholder, branchProbeID)
		assert.True(t, gitTakesBranch(t, resolved), "checkBranch accepts %q, git does not", name)
	}
	for _, refused := range []string{"a..b", "a@{1}", "a/.b", "a.lock", "-a", "a/", "a.", "a b", "a~1", "a:b", "a[b"} {
		require.False(t, gitTakesBranch(t, refused), "git takes %q", refused)
		assert.NotEmpty(t, checkBranch(refused), "%q", refused)
	}
}

// FuzzCheckBranch: a branch checkBranch accepts is one git takes.
func FuzzCheckBranch(f *testing.F) {
	for _, s := range []string{"review/{task_id}", "a..b", "x/y.lock", "@{", "a/./b", "ü", "-x", "kiln/x", "a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if checkBranch(name) != "" {
			return
		}
		resolved := strings.ReplaceAll(name, schema.TaskIDPlaceholder, branchProbeID)
		if !gitTakesBranch(t, resolved) {
			t.Fatalf("checkBranch accepts %q, which git refuses", name)
		}
	})
}
