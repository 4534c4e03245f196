package podexec

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/tests/kbtest"
)

// TestExecOnKubebox runs commands in a kubebox pod through the real apiserver.
func TestExecOnKubebox(t *testing.T) {
	if testing.Short() {
		t.Skip("kubebox")
	}
	c, _ := kbtest.SleeperPod(t, "p", map[string]string{"app": "p"})
	ctx := context.Background()
	ctr, err := FindPod(ctx, c.Client, Target{Namespace: "default", PodSelector: "app=p"}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, Container{Namespace: "default", Pod: "p", Container: "main"}, ctr)

	e := New(c.Client, c.Config, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var out, errOut bytes.Buffer
	code, err := e.Exec(ctx, ctr, Request{Argv: []string{"sh", "-c", "echo one\nsleep 0.3\necho two; echo err >&2; exit 3"}, Stdout: &out, Stderr: &errOut})
	require.NoError(t, err)
	require.Equal(t, 3, code)
	require.Equal(t, "one\ntwo\n", out.String())
	require.Equal(t, "err\n", errOut.String())

	// stdin is streamed and closed; a large output arrives whole.
	in := strings.Repeat("x", 1<<20) + "\n"
	out.Reset()
	code, err = e.Exec(ctx, ctr, Request{Argv: []string{"sh", "-c", "wc -c; head -c 3000000 /dev/zero"}, Stdin: strings.NewReader(in), Stdout: &out})
	require.NoError(t, err)
	require.Equal(t, 0, code)
	require.True(t, strings.HasPrefix(out.String(), "1048577\n"), out.String()[:min(out.Len(), 40)])
	require.Equal(t, 8+3000000, out.Len())
	require.Zero(t, e.Fallbacks(), "WebSocket worked")

	// Runner (gitstep.Runner): argv run directly, stdin given, exit code returned.
	stdout, stderr, code, err := Runner{Exec: e, Container: ctr}.Run(ctx, []string{"sh", "-c", "cat; echo oops >&2; exit 7"}, []byte("in put"))
	require.NoError(t, err)
	require.Equal(t, 7, code)
	require.Equal(t, "in put", string(stdout))
	require.Equal(t, "oops\n", string(stderr))

	// A pod that does not exist.
	_, err = FindPod(ctx, c.Client, Target{Namespace: "default", PodName: "nope"}, 0)
	require.ErrorIs(t, err, ErrNoPod)
}
