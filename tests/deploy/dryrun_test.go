package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/tests/kbtest"
)

// The rendered base and example overlay are accepted by a real API server:
// `kubectl apply --server-side --dry-run=server` runs admission, defaulting,
// schema and field validation (strict) without persisting anything. The
// namespaces and the ServiceMonitor CRD are created for real first, as they
// would exist in a cluster before Kiln is applied.
func TestServerSideDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubebox")
	}
	rendered := map[string][]byte{}
	for name, dir := range kustomizations {
		rendered[name] = render(t, dir)
	}
	c := kbtest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, ns := range []string{"kiln", "kiln-builds", "kiln-projects", "acme-web"} {
		_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err, "creating namespace %s", ns)
		}
	}
	crd, err := os.ReadFile("testdata/servicemonitor-crd.yaml")
	require.NoError(t, err)
	apply(t, c, crd)
	wait := exec.CommandContext(ctx, kubectl(t), "--kubeconfig", c.Kubeconfig, "wait", "--for=condition=Established",
		"--timeout=60s", "crd/servicemonitors.monitoring.coreos.com")
	out, err := wait.CombinedOutput()
	require.NoError(t, err, "waiting for the ServiceMonitor CRD: %s", out)

	for _, name := range []string{"base", "example"} {
		t.Run(name, func(t *testing.T) {
			out := apply(t, c, rendered[name], "--dry-run=server")
			// One line per object, each "(server dry run)".
			n := len(objects(t, rendered[name]))
			require.Equal(t, n, strings.Count(out, "(server dry run)"), "every object accepted:\n%s", out)
		})
	}

	// Nothing was persisted by the dry runs.
	_, err = c.Client.AppsV1().Deployments("kiln").Get(ctx, "kiln-dispatcher", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "a dry run must not create the Deployment: %v", err)
}

// apply runs `kubectl apply --server-side` on y with the admin kubeconfig.
func apply(t *testing.T, c *kbtest.Cluster, y []byte, extra ...string) string {
	t.Helper()
	args := append([]string{"--kubeconfig", c.Kubeconfig, "apply", "--server-side", "--field-manager=kiln-deploy-test",
		"--validate=strict"}, extra...)
	args = append(args, "-f", "-")
	cmd := exec.Command(kubectl(t), args...)
	cmd.Stdin = bytes.NewReader(y)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "kubectl %s:\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String()
}
