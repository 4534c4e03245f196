// Package childproc starts helper processes (kubebox, the dispatcher, the
// Lambda emulator) that die with the test or benchmark that started them.
package childproc

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Start starts cmd with a parent-death signal of SIGKILL, forked from an OS
// thread that lives as long as the process.
//
// The kernel sends the parent-death signal when the *thread* that forked the
// child exits, not the process. The Go runtime ends a thread when a goroutine
// that locked it returns, and any goroutine may have run on that thread
// before it was locked, so a plain cmd.Start with Pdeathsig kills the child
// at a moment nobody chose. Forking from one thread that is never released
// ties the signal to the process.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	once.Do(func() {
		reqs = make(chan request)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	reqs <- request{cmd, done}
	return <-done
}

var (
	once sync.Once
	reqs chan request
)

type request struct {
	cmd  *exec.Cmd
	done chan error
}
