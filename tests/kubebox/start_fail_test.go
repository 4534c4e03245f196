package kubebox_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/kubebox"
)

// TestStartFailureReportsChildOutput checks that a child that cannot start
// fails Start with its own output, leaves nothing running, and keeps logs.
func TestStartFailureReportsChildOutput(t *testing.T) {
	t.Parallel()
	_, err := kubebox.Start(t.Context(), kubebox.Options{
		APIServerArgs: []string{"--no-such-flag"},
	})
	require.Error(t, err)
	require.Contains(t, err.Error(), "kube-apiserver exited")
	require.Contains(t, err.Error(), "unknown flag: --no-such-flag")
	i := strings.Index(err.Error(), "(logs kept in ")
	require.GreaterOrEqual(t, i, 0, err.Error())
	logDir := strings.TrimSuffix(err.Error()[i+len("(logs kept in "):], ")")
	_, statErr := os.Stat(filepath.Join(logDir, "kube-apiserver.log"))
	require.NoError(t, statErr)
	os.RemoveAll(filepath.Dir(logDir))
}
