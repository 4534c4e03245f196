package kubebox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one control-plane child (etcd, kube-apiserver, ...).
//
// Children run in their own process group and get SIGKILL when the parent
// dies (Pdeathsig), so a crashed test binary leaves nothing behind.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string // "" when logs go to Options.Log
	tail    *tailBuffer

	done    chan struct{} // closed when the process has exited
	waitErr error
}

// startProcess starts bin with args; its output goes to logDir/<name>.log,
// or to log (line-prefixed with the name) when log is not nil.
func startProcess(name, bin string, args []string, logDir string, log io.Writer) (*process, error) {
	p := &process{name: name, tail: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	var out io.Writer
	var file *os.File
	if log != nil {
		out = io.MultiWriter(&prefixWriter{prefix: "[" + name + "] ", w: log}, p.tail)
	} else {
		p.logPath = filepath.Join(logDir, name+".log")
		f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("opening log of %s: %w", name, err)
		}
		file = f
		out = io.MultiWriter(f, p.tail)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Keep the parent's proxy settings from redirecting loopback traffic.
	cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	if err := spawn(cmd); err != nil {
		if file != nil {
			file.Close()
		}
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		if file != nil {
			file.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, with an error that carries
// the end of its output.
func (p *process) exited() error {
	select {
	case <-p.done:
		return p.exitError()
	default:
		return nil
	}
}

func (p *process) exitError() error {
	where := ""
	if p.logPath != "" {
		where = " (log: " + p.logPath + ")"
	}
	return fmt.Errorf("%s exited: %v%s; last output:\n%s", p.name, p.waitErr, where, p.tail.String())
}

// stop sends SIGTERM to the process group, waits up to grace, then kills it.
// It is safe to call more than once.
func (p *process) stop(grace time.Duration) {
	if p == nil || p.cmd == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		// The leader is gone; make sure nothing else in its group lingers.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// StartChild starts cmd with a parent-death signal of SIGKILL, forked from
// the thread that forks kubebox's own children, which lives as long as the
// process: for programs that run `kubebox up` as a child (see spawner).
func StartChild(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return spawn(cmd)
}

// spawner is a goroutine locked to its OS thread for the life of the
// process. Pdeathsig fires when the *thread* that forked a child exits, not
// the process; Go ends a thread when a goroutine that locked it returns, so
// children are forked from this thread, which never ends.
var spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnRequest{cmd, done}
	return <-done
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func (t *tailBuffer) contains(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Contains(t.buf, []byte(s))
}

// prefixWriter writes whole lines to w, each starting with prefix. Writers
// sharing one w are serialized by lockedWriter (see Options.Log).
type prefixWriter struct {
	prefix string
	w      io.Writer
	mu     sync.Mutex
	part   []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.part = append(p.part, b...)
	for {
		i := bytes.IndexByte(p.part, '\n')
		if i < 0 {
			break
		}
		line := p.prefix + string(p.part[:i+1])
		p.part = p.part[i+1:]
		if _, err := io.WriteString(p.w, line); err != nil {
			return len(b), nil // a broken log sink must not kill the child
		}
	}
	return len(b), nil
}

// lockedWriter serializes writes from several children to one io.Writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// addrInUse reports whether a process failed because its port was taken
// (another cluster picked the same free port between our probe and its bind).
func addrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

var (
	errStopped     = errors.New("kubebox: cluster stopped")
	errNodeStopped = errors.New("node stopped")
)
