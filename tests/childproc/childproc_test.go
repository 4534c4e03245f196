package childproc

import (
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startOnRetiredThread calls start from a goroutine locked to its thread and
// then returns, which ends that thread, and reports how the child fared.
func startOnRetiredThread(t *testing.T, start func(*exec.Cmd) error) error {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // returning while locked ends the thread
		started <- start(cmd)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-time.After(500 * time.Millisecond):
		_ = cmd.Process.Kill()
		<-exited
		return nil
	}
}

// TestPlainStartDiesWithItsThread is the hazard Start exists for: a child
// started with Pdeathsig from a thread that then ends is killed. (The
// runtime parks rather than ends the main thread, so a goroutine that
// happened to run there is retried.)
func TestPlainStartDiesWithItsThread(t *testing.T) {
	var err error
	for range 5 {
		err = startOnRetiredThread(t, func(cmd *exec.Cmd) error {
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			return cmd.Start()
		})
		if err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("plain Start from a retired thread: child ended with %v, want killed", err)
	}
}

// TestStartOutlivesTheCallersThread: Start forks from its own thread, so the
// caller's thread ending does not take the child with it.
func TestStartOutlivesTheCallersThread(t *testing.T) {
	var attr *syscall.SysProcAttr
	err := startOnRetiredThread(t, func(cmd *exec.Cmd) error {
		err := Start(cmd)
		attr = cmd.SysProcAttr
		return err
	})
	if err != nil {
		t.Fatalf("child started by Start ended when the caller's thread did: %v", err)
	}
	if attr.Pdeathsig != syscall.SIGKILL {
		t.Fatalf("Pdeathsig = %v, want SIGKILL", attr.Pdeathsig)
	}
}
