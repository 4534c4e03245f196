package node

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot manages per-container cgroups (cgroup v1) of one controller
// (memory, cpu), nested under the node process's own cgroup of that
// controller so the node's parent keeps accounting for them:
// <own cgroup>/kubebox/<pod uid>/<container>-<attempt>.
type cgroupRoot struct {
	dir string // "" when the controller is not usable
	log *slog.Logger

	mu       sync.Mutex
	pods     map[string]bool // pod uids this node made cgroups for
	removing sync.WaitGroup
}

func newCgroupRoot(log *slog.Logger, controller string) *cgroupRoot {
	own := ownCgroup(controller)
	dir := filepath.Join("/sys/fs/cgroup", controller, own, "kubebox")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn(controller+" cgroups unavailable; its limits are not enforced", "err", err)
		return &cgroupRoot{log: log}
	}
	return &cgroupRoot{dir: dir, log: log, pods: map[string]bool{}}
}

// ownCgroup is this process's cgroup of a v1 controller.
func ownCgroup(controller string) string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) == 3 && strings.Contains(","+parts[1]+",", ","+controller+",") {
			return parts[2]
		}
	}
	return "/"
}

// create makes the cgroup for one container attempt and writes settings
// (file name -> value) into it. It returns "" when the controller is not
// usable.
func (r *cgroupRoot) create(podUID, name string, settings map[string]string) (string, error) {
	if r.dir == "" {
		return "", nil
	}
	r.mu.Lock()
	r.pods[podUID] = true
	r.mu.Unlock()
	dir := filepath.Join(r.dir, podUID, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for file, value := range settings {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// oomKilled reports whether the kernel OOM-killed a process of the cgroup.
func oomKilled(dir string) bool {
	if dir == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return false
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("oom_kill ")); ok {
			n, _ := strconv.Atoi(string(v))
			return n > 0
		}
	}
	return false
}

// killAll sends sig to every process left in the cgroup.
func killCgroup(dir string, sig syscall.Signal) {
	if dir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// remove deletes a container cgroup once its processes are gone, and its pod
// directory when that is empty.
func (r *cgroupRoot) remove(dir string) {
	if dir == "" {
		return
	}
	r.removing.Add(1)
	go func() {
		defer r.removing.Done()
		if !removeCgroup(dir, 5*time.Second) {
			r.log.Warn("could not remove cgroup", "dir", dir)
			return
		}
		_ = os.Remove(filepath.Dir(dir)) // the pod's, if empty
	}()
}

// removeCgroup kills what is left in a cgroup and removes it once the
// kernel lets it go (killed processes must be reaped first).
func removeCgroup(dir string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		killCgroup(dir, syscall.SIGKILL)
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanup removes the cgroups this node made that are still there.
func (r *cgroupRoot) cleanup() {
	if r.dir == "" {
		return
	}
	r.removing.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid := range r.pods {
		ctrs, _ := os.ReadDir(filepath.Join(r.dir, uid))
		for _, c := range ctrs {
			if c.IsDir() {
				removeCgroup(filepath.Join(r.dir, uid, c.Name()), 2*time.Second)
			}
		}
		_ = os.Remove(filepath.Join(r.dir, uid))
	}
}

func memTotal() int64 {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return 0
	}
	return int64(info.Totalram) * int64(info.Unit)
}

func diskTotal(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * st.Bsize
}
