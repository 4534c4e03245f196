package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	execIdleTimeout = 4 * time.Hour
	followPoll      = 100 * time.Millisecond
)

// handler is the kubelet API the apiserver proxies pods/exec and pods/log to.
func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", n.serveExec)
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", n.serveExec)
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", n.serveAttach)
	mux.HandleFunc("/attach/{ns}/{pod}/{uid}/{container}", n.serveAttach)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", n.serveLogs)
	mux.HandleFunc("/portForward/{ns}/{pod}", n.servePortForward)
	mux.HandleFunc("/portForward/{ns}/{pod}/{uid}", n.servePortForward)
	return mux
}

type portForwarderFunc func(ctx context.Context, port int32, stream io.ReadWriteCloser) error

func (f portForwarderFunc) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	return f(ctx, port, stream)
}

// servePortForward forwards to 127.0.0.1: pods share the node's network.
func (n *Node) servePortForward(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("pod")
	pod, err := n.pods.Pods(ns).Get(name)
	if err != nil || (r.PathValue("uid") != "" && string(pod.UID) != r.PathValue("uid")) {
		http.Error(w, fmt.Sprintf("pod %s/%s not found", ns, name), http.StatusNotFound)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	forward := portForwarderFunc(func(ctx context.Context, port int32, stream io.ReadWriteCloser) error {
		defer stream.Close()
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(podIP, strconv.Itoa(int(port))))
		if err != nil {
			return fmt.Errorf("failed to connect to localhost:%d inside namespace %q: %w", port, name, err)
		}
		defer conn.Close()
		errc := make(chan error, 2)
		go func() { _, err := io.Copy(conn, stream); errc <- err }()
		go func() { _, err := io.Copy(stream, conn); errc <- err }()
		select {
		case err = <-errc:
		case <-ctx.Done():
		}
		return err
	})
	portforward.ServePortForward(w, r, forward, name, string(pod.UID), opts, execIdleTimeout,
		remotecommand.DefaultStreamCreationTimeout, portforward.SupportedProtocols)
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		http.Error(w, he.msg, he.code)
		return
	}
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

// lookup finds a container of a pod bound to this node.
func (n *Node) lookup(ns, name, ctr, uid string) (*podWorker, *container, error) {
	pod, err := n.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && uid != "" && string(pod.UID) != uid) {
		return nil, nil, &httpError{http.StatusNotFound, fmt.Sprintf("pod %s/%s not found", ns, name)}
	}
	if err != nil {
		return nil, nil, err
	}
	w := n.worker(pod.UID)
	if w == nil {
		return nil, nil, &httpError{http.StatusNotFound, fmt.Sprintf("pod %s/%s is not running on this node", ns, name)}
	}
	c := w.container(ctr)
	if c == nil {
		return nil, nil, &httpError{http.StatusBadRequest, fmt.Sprintf("container %s is not valid for pod %s", ctr, name)}
	}
	return w, c, nil
}

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

func (n *Node) serveLogs(w http.ResponseWriter, r *http.Request) {
	pod := r.PathValue("pod")
	pw, c, err := n.lookup(r.PathValue("ns"), pod, r.PathValue("container"), "")
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	follow := q.Get("follow") == "true" || q.Get("follow") == "1"
	previous := q.Get("previous") == "true" || q.Get("previous") == "1"
	tail := int64(-1)
	if s := q.Get("tailLines"); s != "" {
		if tail, err = strconv.ParseInt(s, 10, 64); err != nil || tail < 0 {
			http.Error(w, "invalid tailLines", http.StatusBadRequest)
			return
		}
	}
	limit := int64(-1)
	if s := q.Get("limitBytes"); s != "" {
		if limit, err = strconv.ParseInt(s, 10, 64); err != nil || limit <= 0 {
			http.Error(w, "invalid limitBytes", http.StatusBadRequest)
			return
		}
	}

	opts := logOptions{timestamps: q.Get("timestamps") == "true" || q.Get("timestamps") == "1"}
	if s := q.Get("sinceSeconds"); s != "" {
		secs, err := strconv.ParseInt(s, 10, 64)
		if err != nil || secs <= 0 {
			http.Error(w, "invalid sinceSeconds", http.StatusBadRequest)
			return
		}
		opts.since = time.Now().Add(-time.Duration(secs) * time.Second)
	}
	if s := q.Get("sinceTime"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			http.Error(w, "invalid sinceTime", http.StatusBadRequest)
			return
		}
		opts.since = t
	}
	finished := false

	pw.mu.Lock()
	var path string
	var done chan struct{}
	switch {
	case previous:
		if len(c.logPaths) < 2 {
			pw.mu.Unlock()
			http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", c.spec.Name, pod), http.StatusBadRequest)
			return
		}
		path = c.logPaths[len(c.logPaths)-2]
		follow = false
	case len(c.logPaths) == 0:
		reason := c.waiting.Reason
		pw.mu.Unlock()
		http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: %s", c.spec.Name, pod, reason), http.StatusBadRequest)
		return
	default:
		path = c.logPaths[len(c.logPaths)-1]
		done = c.done
	}
	pw.mu.Unlock()

	f, err := os.Open(path)
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	if tail >= 0 {
		if err := seekTail(f, tail); err != nil {
			writeError(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	var out io.Writer = w
	if limit > 0 {
		out = &limitWriter{w: w, n: limit}
	}
	rc := http.NewResponseController(w)
	rd := bufio.NewReaderSize(f, 64*1024)
	var partial []byte // a record read before it was completely written
	var tick *time.Ticker
	for {
		line, rerr := rd.ReadBytes('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				partial = append(partial, line...)
			} else {
				if partial != nil {
					line, partial = append(partial, line...), nil
				}
				if rec, ok := parseLogRecord(line); ok {
					if err := opts.writeRecord(out, rec); err != nil {
						return
					}
				}
				if follow && rd.Buffered() == 0 {
					_ = rc.Flush()
				}
			}
		}
		if rerr == nil {
			continue
		}
		if rerr != io.EOF || !follow || finished {
			return
		}
		if tick == nil {
			tick = time.NewTicker(followPoll)
			defer tick.Stop()
		}
		select {
		case <-done:
			// The container ended and its log is complete: read the rest.
			finished = true
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

var errLimit = errors.New("limit reached")

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	if err == nil && l.n <= 0 {
		err = errLimit
	}
	return n, err
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int64) error {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	const chunk = 8192
	pos := end
	lines := int64(0)
	buf := make([]byte, chunk)
	first := true
	for pos > 0 {
		size := int64(chunk)
		if pos < size {
			size = pos
		}
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil && err != io.EOF {
			return err
		}
		b := buf[:size]
		if first && len(b) > 0 && b[len(b)-1] == '\n' {
			b = b[:len(b)-1] // the final newline ends the last line
		}
		first = false
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '\n' {
				lines++
				if lines == n {
					_, err := f.Seek(pos+int64(i)+1, io.SeekStart)
					return err
				}
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// tailFile returns up to the last n lines (and at most max bytes) of a file.
func tailFile(path string, n int64, maxBytes int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if err := seekTail(f, n); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	return string(bytes.TrimRight(b, "\x00"))
}
