package run

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/tests/runner_e2e/harness"
	"github.com/stretchr/testify/require"
)

// testBuildID is unique on this machine: the kill finds a run's processes
// by their marker, machine-wide, and tests run in parallel.
func testBuildID(t *testing.T) string {
	return fmt.Sprintf("t%d-%s", os.Getpid(), safeID(t.Name()))
}

// wrapper is AgentScript running as a local process, its stdin a pipe the
// test holds (as the exec stream would).
type wrapper struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout string // file names
	stderr string
	done   chan int
}

func startWrapper(t *testing.T, dir, id string, argv []string, prompt string) *wrapper {
	t.Helper()
	work := filepath.Join(dir, "work")
	require.NoError(t, os.MkdirAll(work, 0o755))
	r, w, err := os.Pipe()
	require.NoError(t, err)
	x := &wrapper{stdin: w, stdout: filepath.Join(dir, "stdout"), stderr: filepath.Join(dir, "stderr"), done: make(chan int, 1)}
	out, err := os.Create(x.stdout)
	require.NoError(t, err)
	errOut, err := os.Create(x.stderr)
	require.NoError(t, err)
	x.cmd = exec.Command("sh", "-c", AgentScript(work, dir, id, argv, 10))
	x.cmd.Stdin, x.cmd.Stdout, x.cmd.Stderr = r, out, errOut
	require.NoError(t, x.cmd.Start())
	r.Close()
	out.Close()
	errOut.Close()
	go func() {
		_ = x.cmd.Wait()
		x.done <- x.cmd.ProcessState.ExitCode()
	}()
	go func() { _, _ = io.Copy(w, AgentStdin([]byte(prompt), make(chan struct{}))) }() // never ends: the stdin stays open
	t.Cleanup(func() {
		w.Close()
		_ = x.cmd.Process.Kill()
	})
	return x
}

func (x *wrapper) wait(t *testing.T) (code int, stdout, stderr string) {
	t.Helper()
	select {
	case code = <-x.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent's wrapper did not exit")
	}
	o, _ := os.ReadFile(x.stdout)
	e, _ := os.ReadFile(x.stderr)
	return code, string(o), string(e)
}

// waitPID waits for a pid written to a file.
func waitPID(t *testing.T, file string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "no pid in %s", file)
	return pid
}

func requireGone(t *testing.T, within time.Duration, pids ...int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, p := range pids {
			if harness.Alive(p) {
				return false
			}
		}
		return true
	}, within, 20*time.Millisecond, "pids %v: some still running", pids)
}

// session is a process's session id (field 6 of /proc/PID/stat).
func session(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	sid, err := strconv.Atoi(f[3])
	require.NoError(t, err)
	return sid
}

// loopingAgent is an "agent" that starts, in a session of its own (as the
// CLI runs Bash tool commands), a shell looping forever, writes the pids
// of both, and waits; with ignoreTerm it ignores SIGTERM, so only SIGKILL
// ends it.
func loopingAgent(dir string, ignoreTerm bool) []string {
	trap := ""
	if ignoreTerm {
		trap = `trap "" TERM; `
	}
	return []string{"sh", "-c", trap + `echo $$ > "$1/agent.pid"; ` +
		`setsid sh -c 'echo $$ > "$1/tool.pid"; while :; do sleep 1; done' sh "$1" >/dev/null 2>&1 & ` +
		`while :; do sleep 1; done`, "sh", dir}
}

// The wrapper enters the workdir, gives the agent the prompt whole on its
// stdin and the marker in its environment, passes arguments unchanged
// (none is interpreted by the shell) and returns the agent's exit status.
func TestAgentScriptRunsTheAgent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id := testBuildID(t)
	prompt := "line one\nit's $(touch pwned) `touch pwned`\n" + strings.Repeat("0123456789", 30<<10) + "\nno newline at the end"
	argv := []string{"sh", "-c", `printf '%s|' "$@"; cat > "$PWD/../prompt"; echo; pwd; echo "$KILN_AGENT_RUN"; exit 4`, "sh",
		"$(touch pwned)", "it's", "a b", "two\nlines", "`touch pwned`", `back\slash "q"`}
	x := startWrapper(t, dir, id, argv, prompt)
	code, stdout, stderr := x.wait(t)
	require.Equal(t, 4, code, stderr)
	require.Equal(t, "$(touch pwned)|it's|a b|two\nlines|`touch pwned`|back\\slash \"q\"|\n"+filepath.Join(dir, "work")+"\n"+safeID(id)+"\n", stdout)
	require.Empty(t, stderr)
	got, err := os.ReadFile(filepath.Join(dir, "prompt"))
	require.NoError(t, err)
	require.Equal(t, prompt, string(got))
	for _, f := range []string{filepath.Join(dir, "work", "pwned"), PIDFile(dir, id), promptFile(dir, id)} {
		_, err = os.Stat(f)
		require.ErrorIs(t, err, os.ErrNotExist, f)
	}
}

func TestAgentScriptRefusesABadHeader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", AgentScript(dir, dir, testBuildID(t), []string{"true"}, 10))
	cmd.Stdin = strings.NewReader("12\nshort")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 125, cmd.ProcessState.ExitCode())
	require.Equal(t, "kiln: prompt cut short\n", string(out))
	cmd = exec.Command("sh", "-c", AgentScript(dir, dir, testBuildID(t), []string{"true"}, 10))
	cmd.Stdin = strings.NewReader("x\n")
	out, _ = cmd.CombinedOutput()
	require.Equal(t, 125, cmd.ProcessState.ExitCode())
	require.Equal(t, "kiln: bad prompt length x\n", string(out))
}

// The kill ends the agent and every process it started, including one in a
// session of its own that a process-group kill would miss.
func TestKillScriptStopsEveryProcessOfTheRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		ignoreTerm bool
		msg        string
	}{
		{"agent stops on SIGTERM", false, `^agent \(pid (\d+)\) stopped with SIGTERM(; \d+ process(es)? of the run killed with SIGKILL)?\n$`},
		{"agent ignores SIGTERM", true, `^agent \(pid (\d+)\) still running 1\.0s after SIGTERM; \d+ processes of the run killed with SIGKILL\n$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			id := testBuildID(t)
			x := startWrapper(t, dir, id, loopingAgent(dir, tc.ignoreTerm), "go")
			agentPID, tool := waitPID(t, filepath.Join(dir, "agent.pid")), waitPID(t, filepath.Join(dir, "tool.pid"))
			require.NotEqual(t, session(t, agentPID), session(t, tool), "the tool runs in a session of its own")
			require.Eventually(t, func() bool { _, err := os.Stat(PIDFile(dir, id)); return err == nil }, 5*time.Second, 10*time.Millisecond)

			out, err := exec.Command("sh", "-c", KillScript(dir, id, 10)).CombinedOutput()
			require.NoError(t, err, string(out))
			m := regexp.MustCompile(tc.msg).FindStringSubmatch(string(out))
			require.NotNil(t, m, "%q", out)
			require.Equal(t, strconv.Itoa(agentPID), m[1])
			requireGone(t, time.Second, agentPID, tool)
			code, _, _ := x.wait(t)
			require.Contains(t, []int{137, 143}, code, "the agent died of SIGTERM or SIGKILL")
			_, err = os.Stat(PIDFile(dir, id))
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// Runner loss: the exec stream dies, so the wrapper's stdin ends while the
// agent runs. The watchdog stops the run — also when the wrapper itself was
// killed (as a runtime may do to the exec'd process), leaving the agent to
// init.
func TestAgentWatchdogStopsTheRunWhenStdinEnds(t *testing.T) {
	t.Parallel()
	for _, killWrapper := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapper killed %v", killWrapper), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			id := testBuildID(t)
			x := startWrapper(t, dir, id, loopingAgent(dir, true), "go")
			agentPID, tool := waitPID(t, filepath.Join(dir, "agent.pid")), waitPID(t, filepath.Join(dir, "tool.pid"))
			require.Eventually(t, func() bool { _, err := os.Stat(PIDFile(dir, id)); return err == nil }, 5*time.Second, 10*time.Millisecond)
			time.Sleep(200 * time.Millisecond)
			require.True(t, harness.Alive(agentPID) && harness.Alive(tool), "the open stdin keeps the run going")
			if killWrapper {
				require.NoError(t, x.cmd.Process.Kill())
			}
			x.stdin.Close()
			requireGone(t, 10*time.Second, agentPID, tool)
			code, _, _ := x.wait(t)
			if !killWrapper {
				require.Equal(t, 137, code, "the agent ignored SIGTERM and was killed")
			}
			require.Eventually(t, func() bool { _, err := os.Stat(PIDFile(dir, id)); return os.IsNotExist(err) }, 5*time.Second, 10*time.Millisecond)
		})
	}
}

// An agent that exits leaving a server running in the background (in a
// session of its own): the wrapper kills it and returns the agent's status.
func TestAgentScriptKillsWhatTheAgentLeft(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	argv := []string{"sh", "-c", `setsid sh -c 'echo $$ > "$1/tool.pid"; while :; do sleep 1; done' sh "$1" >/dev/null 2>&1 &
while [ ! -s "$1/tool.pid" ]; do sleep 0.05; done; exit 0`, "sh", dir}
	x := startWrapper(t, dir, testBuildID(t), argv, "go")
	code, _, stderr := x.wait(t)
	require.Equal(t, 0, code)
	require.Regexp(t, `^kiln: \d+ process\(es\) the agent left running killed\n$`, stderr)
	requireGone(t, time.Second, waitPID(t, filepath.Join(dir, "tool.pid")))
}

func TestKillScriptWithoutAgent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id := testBuildID(t)
	cmd := exec.Command("sh", "-c", KillScript(dir, id, 1))
	out, _ := cmd.CombinedOutput()
	require.Equal(t, 3, cmd.ProcessState.ExitCode())
	require.Equal(t, "no agent pid file\n", string(out))

	f := PIDFile(dir, id)
	require.NoError(t, os.WriteFile(f, []byte("999999999\n"), 0o644))
	out, err := exec.Command("sh", "-c", KillScript(dir, id, 1)).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, "agent (pid 999999999) already gone\n", string(out))
	_, err = os.Stat(f)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// A pid file naming a process of another run (a reused pid) is not killed.
func TestKillScriptSparesUnmarkedProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id := testBuildID(t)
	other := exec.Command("sleep", "30")
	other.Env = append(os.Environ(), AgentMarker(id+"-other"))
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	require.NoError(t, os.WriteFile(PIDFile(dir, id), []byte(strconv.Itoa(other.Process.Pid)), 0o644))
	out, err := exec.Command("sh", "-c", KillScript(dir, id, 1)).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, fmt.Sprintf("agent (pid %d) already gone\n", other.Process.Pid), string(out))
	require.True(t, harness.Alive(other.Process.Pid))
}

func TestAgentStdin(t *testing.T) {
	t.Parallel()
	done := make(chan struct{})
	r := AgentStdin([]byte("héllo\n"), done)
	buf := make([]byte, 3)
	var got []byte
	for len(got) < 9 {
		n, err := r.Read(buf)
		require.NoError(t, err)
		got = append(got, buf[:n]...)
	}
	require.Equal(t, "7\nhéllo\n", string(got))
	read := make(chan error, 1)
	go func() {
		_, err := r.Read(buf)
		read <- err
	}()
	select {
	case err := <-read:
		t.Fatalf("read returned %v before done", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(done)
	require.ErrorIs(t, <-read, io.EOF)
}
