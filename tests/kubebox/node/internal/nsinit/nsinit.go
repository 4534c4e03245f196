// Package nsinit starts a container process: the node re-executes its own
// binary (/proc/self/exe) in a fresh mount and UTS namespace, and this
// package's init function, which runs before the rest of the program, joins
// the container's cgroup, bind-mounts its volumes, sets its hostname and
// working directory, and then execs the container's command.
//
// It is not a sandbox: the process runs as the node's user and sees the
// host's filesystem apart from its own mounts. Any binary that links the node
// package carries this hook; it only acts when the marker variable is set.
package nsinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// marker is the environment variable that turns a re-executed binary into
// the container init. Its value is unused.
const marker = "_KUBEBOX_NSINIT"

// Spec describes the process to start.
type Spec struct {
	// Args is the command line; Args[0] is resolved on the PATH of Env
	// (after the mounts) unless it contains a slash.
	Args []string `json:"args"`
	// Path, if set, is the executable to run instead of resolving Args[0].
	Path string   `json:"path,omitempty"`
	Env  []string `json:"env"`
	// Dir is the working directory, created if missing.
	Dir string `json:"dir,omitempty"`
	// Hostname is set in the process's own UTS namespace.
	Hostname string `json:"hostname,omitempty"`
	// Cgroups are cgroup directories whose cgroup.procs the process joins
	// before anything else.
	Cgroups []string `json:"cgroups,omitempty"`
	// Mounts are bind mounts, applied shallowest target first.
	Mounts []Mount `json:"mounts,omitempty"`
}

// Mount is one bind mount.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

func init() {
	if _, ok := os.LookupEnv(marker); !ok {
		return
	}
	errPipe := os.NewFile(4, "nsinit-error")
	err := start()
	fmt.Fprint(errPipe, err.Error())
	os.Exit(128)
}

// start runs in the child; it returns only on failure.
func start() error {
	syscall.CloseOnExec(4)
	specPipe := os.NewFile(3, "nsinit-spec")
	var spec Spec
	data, err := io.ReadAll(specPipe)
	specPipe.Close()
	if err != nil {
		return fmt.Errorf("reading spec: %w", err)
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("decoding spec: %w", err)
	}
	if len(spec.Args) == 0 {
		return errors.New("no command specified")
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	for _, cg := range spec.Cgroups {
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), pid, 0); err != nil {
			return fmt.Errorf("joining cgroup: %w", err)
		}
	}
	if spec.Hostname != "" {
		if err := syscall.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("setting hostname: %w", err)
		}
	}
	for _, m := range sortedMounts(spec.Mounts) {
		if err := bind(m); err != nil {
			return err
		}
	}
	if spec.Dir != "" {
		if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
			return fmt.Errorf("creating working directory: %w", err)
		}
		if err := os.Chdir(spec.Dir); err != nil {
			return fmt.Errorf("changing to working directory: %w", err)
		}
	}
	path := spec.Path
	if path == "" {
		path, err = lookPath(spec.Args[0], spec.Env)
		if err != nil {
			return err
		}
	}
	os.Unsetenv(marker)
	err = syscall.Exec(path, spec.Args, spec.Env)
	return fmt.Errorf("exec: %q: %w", spec.Args[0], err)
}

func sortedMounts(ms []Mount) []Mount {
	ms = slices.Clone(ms)
	slices.SortStableFunc(ms, func(a, b Mount) int {
		return strings.Count(filepath.Clean(a.Target), "/") - strings.Count(filepath.Clean(b.Target), "/")
	})
	return ms
}

func bind(m Mount) error {
	fi, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("mount source %s: %w", m.Source, err)
	}
	if err := ensureTarget(m.Target, fi.IsDir()); err != nil {
		return fmt.Errorf("creating mount point %s: %w", m.Target, err)
	}
	if err := syscall.Mount(m.Source, m.Target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting %s on %s: %w", m.Source, m.Target, err)
	}
	if m.ReadOnly {
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY | syscall.MS_REC)
		if err := syscall.Mount("", m.Target, "", flags, ""); err != nil {
			return fmt.Errorf("remounting %s read-only: %w", m.Target, err)
		}
	}
	return nil
}

func ensureTarget(target string, dir bool) error {
	if _, err := os.Stat(target); err == nil {
		return nil
	}
	if dir {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}

// Process is a started container process.
type Process struct {
	Cmd    *exec.Cmd
	errors *os.File
}

// Starter starts container processes from one goroutine locked to its OS
// thread. The kernel sends a child its parent-death signal when the thread
// that forked it exits, and the Go runtime may retire threads; a thread that
// lives until Close ties the signal to the node instead.
type Starter struct {
	mu     sync.Mutex
	closed bool
	reqs   chan func()
	done   chan struct{}
}

// NewStarter starts the forking goroutine.
func NewStarter() *Starter {
	s := &Starter{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		for f := range s.reqs {
			f()
		}
	}()
	return s
}

// Close ends the forking goroutine and its thread, which SIGKILLs any
// process it started that is still running: call it once they have ended.
func (s *Starter) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.reqs)
	}
	s.mu.Unlock()
	<-s.done
}

func (s *Starter) onThread(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("nsinit: starter closed")
	}
	var err error
	done := make(chan struct{})
	s.reqs <- func() { err = f(); close(done) }
	<-done
	return err
}

// Start starts spec with the given standard streams (nil means /dev/null).
// The process leads its own process group and is SIGKILLed if the starter's
// thread ends (the node dies or closes it).
func (s *Starter) Start(spec Spec, stdin io.Reader, stdout, stderr io.Writer) (*Process, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		specR.Close()
		specW.Close()
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"kubebox-nsinit"},
		Env:        []string{marker + "=1"},
		Stdin:      stdin,
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{specR, errW},
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:      true,
			Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
			Pdeathsig:    syscall.SIGKILL,
		},
	}
	err = s.onThread(cmd.Start)
	specR.Close()
	errW.Close()
	if err != nil {
		specW.Close()
		errR.Close()
		return nil, err
	}
	// The child reads the whole spec before doing anything else, so this
	// write cannot block for long even when the spec exceeds a pipe buffer.
	// If it fails, the child died before reading, and Wait reports why.
	_, _ = specW.Write(data)
	specW.Close()
	return &Process{Cmd: cmd, errors: errR}, nil
}

// StartError blocks until the process has exec'd its command (nil) or
// failed to (the reason). Call it once, before Wait.
func (p *Process) StartError() error {
	defer p.errors.Close()
	msg, _ := io.ReadAll(p.errors)
	if len(msg) == 0 {
		return nil
	}
	return errors.New(string(msg))
}
