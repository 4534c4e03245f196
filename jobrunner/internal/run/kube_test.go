package run

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
)

// TestAgentScriptsOnKubebox runs AgentScript in a kubebox pod through the
// real apiserver: an agent whose tool loops in a session of its own is
// stopped by KillScript from a second exec, and — the runner lost — by the
// wrapper's watchdog when the exec's connection is cut.
func TestAgentScriptsOnKubebox(t *testing.T) {
	if testing.Short() {
		t.Skip("kubebox")
	}
	c, tmp := kbtest.SleeperPod(t, "p", nil)
	ctx := context.Background()
	ctr, err := podexec.FindPod(ctx, c.Client, podexec.Target{Namespace: "default", PodName: "p"}, time.Minute)
	require.NoError(t, err)
	e := podexec.New(c.Client, c.Config, slog.New(slog.NewTextHandler(io.Discard, nil)))

	start := func(t *testing.T, id string) (dir string, agentPID, tool int, cancel context.CancelFunc, done chan int) {
		dir = filepath.Join(tmp, id)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		execCtx, cancel := context.WithCancel(ctx)
		held := make(chan struct{})
		t.Cleanup(func() { close(held) })
		done = make(chan int, 1)
		go func() {
			code, _ := e.Exec(execCtx, ctr, podexec.Request{
				Argv:  []string{"sh", "-c", AgentScript(dir, dir, id, loopingAgent(dir, true), 10)},
				Stdin: AgentStdin([]byte("hello"), held), Stdout: io.Discard,
			})
			done <- code
		}()
		agentPID, tool = waitPID(t, filepath.Join(dir, "agent.pid")), waitPID(t, filepath.Join(dir, "tool.pid"))
		require.NotEqual(t, session(t, agentPID), session(t, tool))
		require.Eventually(t, func() bool { _, err := os.Stat(PIDFile(dir, id)); return err == nil }, 10*time.Second, 10*time.Millisecond)
		return dir, agentPID, tool, cancel, done
	}

	t.Run("kill script", func(t *testing.T) {
		id := testBuildID(t)
		dir, agentPID, tool, cancel, done := start(t, id)
		defer cancel()
		var kout, kerr bytes.Buffer
		code, err := e.Exec(ctx, ctr, podexec.Request{Argv: []string{"sh", "-c", KillScript(dir, id, 10)}, Stdout: &kout, Stderr: &kerr})
		require.NoError(t, err)
		require.Equal(t, 0, code, kerr.String())
		require.Regexp(t, `^agent \(pid `+strconv.Itoa(agentPID)+`\) still running 1\.0s after SIGTERM; \d+ processes of the run killed with SIGKILL\n$`, kout.String())
		select {
		case code := <-done:
			require.Equal(t, 137, code, "the agent ignored SIGTERM")
		case <-time.After(10 * time.Second):
			t.Fatal("the agent's exec did not end")
		}
		requireGone(t, time.Second, agentPID, tool)
		_, err = os.Stat(PIDFile(dir, id))
		require.ErrorIs(t, err, os.ErrNotExist)
	})

	t.Run("runner lost", func(t *testing.T) {
		id := testBuildID(t)
		dir, agentPID, tool, cancel, done := start(t, id)
		time.Sleep(300 * time.Millisecond)
		require.True(t, harness.Alive(agentPID) && harness.Alive(tool))
		cancel() // the connection goes: the kubelet closes the command's stdin, nothing more
		<-done
		requireGone(t, 15*time.Second, agentPID, tool)
		require.Eventually(t, func() bool { _, err := os.Stat(PIDFile(dir, id)); return os.IsNotExist(err) }, 5*time.Second, 10*time.Millisecond)
	})
}
