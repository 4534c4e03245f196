package run

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

// TestAgentScriptsOnKubebox starts a process tree with AgentScript in a
// kubebox pod, then stops it with KillScript from a second exec.
func TestAgentScriptsOnKubebox(t *testing.T) {
	if testing.Short() {
		t.Skip("kubebox")
	}
	c, tmp := kbtest.SleeperPod(t, "p", nil)
	ctx := context.Background()
	ctr, err := podexec.FindPod(ctx, c.Client, podexec.Target{Namespace: "default", PodName: "p"}, time.Minute)
	require.NoError(t, err)
	e := podexec.New(c.Client, c.Config, slog.New(slog.NewTextHandler(io.Discard, nil)))

	pidFile := PIDFile(tmp, "b/1")
	childPID := filepath.Join(tmp, "child")
	// The "agent": ignores SIGTERM, reads its stdin, starts a child, prints, sleeps.
	argv := []string{"sh", "-c", `trap "" TERM; read line; echo "got $line"; sleep 300 & echo $! > ` + childPID + `; wait`}
	var out bytes.Buffer
	done := make(chan int, 1)
	go func() {
		code, _ := e.Exec(ctx, ctr, podexec.Request{Argv: []string{"sh", "-c", AgentScript(tmp, pidFile, argv)},
			Stdin: strings.NewReader("hello\n"), Stdout: &out})
		done <- code
	}()
	var leader, child int
	require.Eventually(t, func() bool {
		a, err1 := os.ReadFile(pidFile)
		b, err2 := os.ReadFile(childPID)
		if err1 != nil || err2 != nil {
			return false
		}
		leader, err1 = strconv.Atoi(strings.TrimSpace(string(a)))
		child, err2 = strconv.Atoi(strings.TrimSpace(string(b)))
		return err1 == nil && err2 == nil
	}, 30*time.Second, 20*time.Millisecond)

	var kout, kerr bytes.Buffer
	code, err := e.Exec(ctx, ctr, podexec.Request{Argv: []string{"sh", "-c", KillScript(pidFile, 10)}, Stdout: &kout, Stderr: &kerr})
	require.NoError(t, err)
	require.Equal(t, 0, code, kerr.String())
	require.Equal(t, "agent process group "+strconv.Itoa(leader)+" killed with SIGKILL\n", kout.String())
	select {
	case code := <-done:
		require.Contains(t, []int{137, 143}, code, "the session leader died of SIGTERM or SIGKILL")
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's exec did not end")
	}
	require.Equal(t, "got hello\n", out.String())
	for _, pid := range []int{leader, child} {
		require.False(t, alive(pid), "pid %d", pid)
	}
	_, err = os.Stat(pidFile)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// alive reports whether pid is a live process; a zombie (killed, not yet
// reaped by whoever inherited it) counts as gone.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
