package harness

import (
	"os"
	"testing"

	"github.com/kilnbuild/kiln/tests/kbtest"
)

// Main is for a test package's TestMain: it moves TMPDIR (and with it
// t.TempDir and the built binaries) under kbtest.HostTempDir(), then
// runs the tests and removes it when they pass.
//
// Why: a pod that mounts an emptyDir on /tmp (the runner's Job does, its
// root filesystem being read-only) hides every host path under /tmp from
// itself, and kubebox binds the termination-log file, the service-account
// token and the executable after mounting the pod's volumes; with its state
// in /tmp such a pod fails with StartError "mount source ... no such file".
func Main(m *testing.M) int {
	tmp, err := os.MkdirTemp(kbtest.HostTempDir(), "kiln-runner-e2e-")
	if err != nil {
		panic(err)
	}
	os.Setenv("TMPDIR", tmp)
	code := m.Run()
	if code == 0 {
		os.RemoveAll(tmp)
	}
	return code
}
