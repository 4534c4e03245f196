package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

type executorFunc func(ctx context.Context, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error

func (f executorFunc) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	return f(ctx, cmd, in, out, errOut, tty, resize)
}

func (n *Node) serveExec(w http.ResponseWriter, r *http.Request) {
	pw, c, err := n.lookup(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container"), r.PathValue("uid"))
	if err != nil {
		writeError(w, err)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "missing command", http.StatusBadRequest)
		return
	}
	exec := executorFunc(func(ctx context.Context, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
		return pw.exec(ctx, c, cmd, in, out, errOut, tty, resize)
	})
	remotecommand.ServeExec(w, r, exec, r.PathValue("pod"), string(pw.uid), c.spec.Name, cmd, opts,
		execIdleTimeout, remotecommand.DefaultStreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

type attacherFunc func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error

func (f attacherFunc) AttachContainer(ctx context.Context, _, _, _ string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return f(ctx, in, out, errOut, tty, resize)
}

func (n *Node) serveAttach(w http.ResponseWriter, r *http.Request) {
	pw, c, err := n.lookup(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container"), r.PathValue("uid"))
	if err != nil {
		writeError(w, err)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	attach := attacherFunc(func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
		return pw.attach(ctx, c, in, out, errOut, tty, resize)
	})
	remotecommand.ServeAttach(w, r, attach, r.PathValue("pod"), string(pw.uid), c.spec.Name, opts,
		execIdleTimeout, remotecommand.DefaultStreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// attach streams what the running container writes from now on, and feeds
// its stdin (when the container has one) until the container ends.
func (w *podWorker) attach(ctx context.Context, c *container, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	if resize != nil {
		go func() {
			for range resize {
			}
		}()
	}
	w.mu.Lock()
	if c.proc == nil || len(c.logPaths) == 0 {
		w.mu.Unlock()
		return fmt.Errorf("container %q is not running", c.spec.Name)
	}
	path, done, stdin, once := c.logPaths[len(c.logPaths)-1], c.done, c.stdin, c.spec.StdinOnce
	w.mu.Unlock()

	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	if in != nil && stdin != nil {
		go func() {
			_, _ = io.Copy(stdin, in)
			if once {
				stdin.Close()
			}
		}()
	}
	if errOut == nil || tty {
		errOut = out
	}
	rd := bufio.NewReader(f)
	var partial []byte
	finished := false
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for {
		line, rerr := rd.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] != '\n' {
			partial = append(partial, line...)
		} else if len(line) > 0 {
			if partial != nil {
				line, partial = append(partial, line...), nil
			}
			if rec, ok := parseLogRecord(line); ok {
				dst := out
				if rec.stream == "stderr" {
					dst = errOut
				}
				if dst != nil {
					if err := (logOptions{}).writeRecord(dst, rec); err != nil {
						return nil // the client went away
					}
				}
			}
		}
		if rerr == nil {
			continue
		}
		if rerr != io.EOF || finished {
			return nil
		}
		select {
		case <-done:
			finished = true
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// exec runs cmd in the container's namespaces with its environment and
// working directory, and returns its exit code as the kubelet does.
func (w *podWorker) exec(ctx context.Context, c *container, args []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	w.mu.Lock()
	if c.running == nil {
		w.mu.Unlock()
		return fmt.Errorf("container %q is not running", c.spec.Name)
	}
	pid, env, dir, cg := c.pid, c.env, c.dir, c.cgroup
	w.mu.Unlock()

	nsArgs := []string{"--target", strconv.Itoa(pid), "--mount", "--uts", "--wdns=" + dir, "--"}
	cmd := exec.CommandContext(ctx, "nsenter", append(nsArgs, args...)...)
	cmd.Env = env
	cmd.WaitDelay = 2 * time.Second
	if tty {
		return execTTY(cmd, cg, in, out, resize)
	}
	if resize != nil {
		go func() {
			for range resize {
			}
		}()
	}
	if out != nil {
		cmd.Stdout = out
	}
	if errOut != nil {
		cmd.Stderr = errOut
	} else if tty && out != nil {
		cmd.Stderr = out
	}
	var stdinW *os.File
	if in != nil {
		r, wr, err := os.Pipe()
		if err != nil {
			return err
		}
		cmd.Stdin = r
		stdinW = wr
		defer r.Close()
	}
	if err := cmd.Start(); err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return err
	}
	// Like a process exec'd into a container, it shares the container's
	// cgroup (and memory limit).
	if cg != "" {
		_ = os.WriteFile(cg+"/cgroup.procs", []byte(strconv.Itoa(cmd.Process.Pid)), 0)
	}
	if stdinW != nil {
		go func() {
			_, _ = io.Copy(stdinW, in)
			stdinW.Close()
		}()
	}
	return exitCode(cmd.Wait(), cmd)
}

// exitCode turns a command's end into what remotecommand reports.
func exitCode(err error, cmd *exec.Cmd) error {
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState.Success() {
		err = nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return err
}

// execTTY runs cmd on a new pseudo-terminal: its stdin, stdout and stderr,
// sized by the client's resize events.
func execTTY(cmd *exec.Cmd, cg string, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	ptmx, pts, err := openPTY()
	if err != nil {
		return fmt.Errorf("allocating a terminal: %w", err)
	}
	defer ptmx.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	pts.Close()
	if err != nil {
		return err
	}
	if cg != "" {
		_ = os.WriteFile(cg+"/cgroup.procs", []byte(strconv.Itoa(cmd.Process.Pid)), 0)
	}
	if resize != nil {
		go func() {
			for size := range resize {
				_ = ioctl(ptmx, func(fd int) error {
					return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
				})
			}
		}()
	}
	if in != nil {
		go func() { _, _ = io.Copy(ptmx, in) }()
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		if out != nil {
			_, _ = io.Copy(out, ptmx) // ends with EIO once the terminal's last user is gone
		} else {
			_, _ = io.Copy(io.Discard, ptmx)
		}
	}()
	err = cmd.Wait()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return exitCode(err, cmd)
}

func openPTY() (ptmx, pts *os.File, err error) {
	ptmx, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var n uint32
	err = ioctl(ptmx, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		ptmx.Close()
		return nil, nil, err
	}
	pts, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		ptmx.Close()
		return nil, nil, err
	}
	return ptmx, pts, nil
}

// ioctl runs f on f's descriptor without switching it to blocking mode (as
// File.Fd would), so Close still interrupts a pending Read.
func ioctl(f *os.File, op func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = op(int(fd)) }); err != nil {
		return err
	}
	return opErr
}
