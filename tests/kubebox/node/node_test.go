package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$$(A)":          "$(A)",
		"$(MISSING)":     "$(MISSING)",
		"$(A":            "$(A",
		"a$":             "a$",
		"$x":             "$x",
		"$$$(B)":         "$two",
		"--flag=$(B)/$$": "--flag=two/$",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSeekTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 5000 {
		b.WriteString(strings.Repeat("x", i%7) + "\n")
	}
	content := b.String()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(content, "\n")
	lines = lines[:len(lines)-1]
	for _, n := range []int{0, 1, 2, 10, 4999, 5000, 7000} {
		got := tailFile(p, int64(n), 1<<30)
		want := strings.Join(lines[max(len(lines)-n, 0):], "")
		if got != want {
			t.Errorf("tail %d: got %d bytes, want %d", n, len(got), len(want))
		}
	}
	// A last line without newline counts as a line.
	if err := os.WriteFile(p, []byte("a\nb\nc"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := tailFile(p, 2, 100); got != "b\nc" {
		t.Errorf("tail of unterminated file = %q", got)
	}
}

func TestImageReferences(t *testing.T) {
	n := &Node{cfg: Config{Images: map[string]string{"busybox": "/bin/busybox", "ghcr.io/x/runner:dev": "/bin/runner"}}}
	for image, want := range map[string]string{
		"busybox":                 "/bin/busybox",
		"busybox:1.36":            "/bin/busybox",
		"busybox@sha256:abc":      "/bin/busybox",
		"ghcr.io/x/runner:dev":    "/bin/runner",
		"ghcr.io/x/runner:latest": "",
		"nosuch":                  "",
	} {
		got, _ := n.lookupImage(image)
		if got != want {
			t.Errorf("lookupImage(%q) = %q, want %q", image, got, want)
		}
	}
	for ref, want := range map[string]string{
		"busybox":            "docker.io/library/busybox:latest",
		"x/y:1":              "docker.io/x/y:1",
		"ghcr.io/x/y":        "ghcr.io/x/y:latest",
		"localhost:5000/a":   "localhost:5000/a:latest",
		"busybox@sha256:abc": "docker.io/library/busybox@sha256:abc",
	} {
		if got := fullReference(ref); got != want {
			t.Errorf("fullReference(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestContainersPhase(t *testing.T) {
	exit := func(code int32) *corev1.ContainerStateTerminated {
		return &corev1.ContainerStateTerminated{ExitCode: code}
	}
	for _, tc := range []struct {
		name   string
		policy corev1.RestartPolicy
		ctrs   []*container
		want   corev1.PodPhase
	}{
		{"waiting", corev1.RestartPolicyNever, []*container{{}}, corev1.PodPending},
		{"running", corev1.RestartPolicyNever, []*container{{running: &corev1.ContainerStateRunning{}}, {lastExit: exit(0)}}, corev1.PodRunning},
		{"all succeeded", corev1.RestartPolicyNever, []*container{{lastExit: exit(0)}, {lastExit: exit(0)}}, corev1.PodSucceeded},
		{"one failed", corev1.RestartPolicyNever, []*container{{lastExit: exit(0)}, {lastExit: exit(3)}}, corev1.PodFailed},
		{"on failure restarting", corev1.RestartPolicyOnFailure, []*container{{lastExit: exit(3), restartPending: true}}, corev1.PodRunning},
		{"on failure succeeded", corev1.RestartPolicyOnFailure, []*container{{lastExit: exit(0)}}, corev1.PodSucceeded},
		{"always", corev1.RestartPolicyAlways, []*container{{lastExit: exit(0), restartPending: true}}, corev1.PodRunning},
	} {
		w := &podWorker{pod: &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: tc.policy}}, ctrs: tc.ctrs}
		for _, c := range tc.ctrs {
			if c.running == nil && c.lastExit == nil {
				c.attempts = 0
			}
		}
		if got := w.containersPhase(); got != tc.want {
			t.Errorf("%s: phase %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestOOMKilled runs a process over its memory limit in a cgroup made the
// way the node makes them and checks that the kill is recognized.
func TestOOMKilled(t *testing.T) {
	root := newCgroupRoot(testLogger(t), "memory")
	if root.dir == "" {
		t.Skip("memory cgroup not writable")
	}
	t.Cleanup(root.cleanup)
	cg, err := root.create("unit-test-pod", "hog-0", map[string]string{"memory.limit_in_bytes": strconv.Itoa(32 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	starter := nsinit.NewStarter()
	defer starter.Close()
	p, err := starter.Start(nsinit.Spec{
		// Holds 200 MiB in the shell's memory.
		Args:    []string{"sh", "-c", `x=$(head -c 209715200 /dev/zero | tr '\0' a); echo survived ${#x}`},
		Env:     []string{"PATH=/usr/bin:/bin"},
		Cgroups: []string{cg},
	}, nil, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.StartError(); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Wait()
	ws := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("process was not killed: %v, output %q", p.Cmd.ProcessState, out.String())
	}
	if !oomKilled(cg) {
		t.Fatal("oom_control does not show an OOM kill")
	}
}

func TestImageCommandPath(t *testing.T) {
	for _, tc := range []struct{ cmd, exe, want string }{
		{"/usr/local/bin/kubebox-no-such-runner", "/tmp/x/kubebox-no-such-runner", "/tmp/x/kubebox-no-such-runner"},
		{"kubebox-no-such-runner", "/tmp/x/kubebox-no-such-runner", ""}, // PATH lookup
		{"/bin/sh", "/tmp/x/sh", ""},                  // exists on the host
		{"/usr/local/bin/other", "/tmp/x/runner", ""}, // another program
	} {
		if got := imageCommandPath(tc.cmd, tc.exe); got != tc.want {
			t.Errorf("imageCommandPath(%q, %q) = %q, want %q", tc.cmd, tc.exe, got, tc.want)
		}
	}
}

func TestUnderMount(t *testing.T) {
	mounts := []nsinit.Mount{{Target: "/workspace"}, {Target: "/"}}
	if !underMount("/workspace/src", mounts[:1]) || !underMount("/workspace", mounts[:1]) || underMount("/workspace2", mounts[:1]) {
		t.Fatal("underMount is wrong about /workspace")
	}
	if !underMount("/anything", mounts[1:]) {
		t.Fatal("everything is under /")
	}
}

func TestContainerLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	l, stdout, stderr, err := startContainerLog(path)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", maxLogRecord+10)
	stdout.WriteString("one\n\n" + long + "\nunterminated")
	stderr.WriteString("err\n")
	stdout.Close()
	stderr.Close()
	l.wait(5 * time.Second)
	select {
	case <-l.done:
	default:
		t.Fatal("log did not finish")
	}

	var out bytes.Buffer
	streams := map[string]int{}
	b, _ := os.ReadFile(path)
	for line := range bytes.Lines(b) {
		r, ok := parseLogRecord(line)
		if !ok {
			t.Fatalf("unparsable record %q", line)
		}
		streams[r.stream]++
		if r.stream == "stdout" {
			_ = logOptions{}.writeRecord(&out, r)
		}
	}
	if want := "one\n\n" + long + "\nunterminated\n"; out.String() != want {
		t.Errorf("stdout content: got %d bytes, want %d", out.Len(), len(want))
	}
	if streams["stderr"] != 1 || streams["stdout"] != 5 { // the long line is two records
		t.Errorf("records per stream: %v", streams)
	}
	if got := tailLog(path, 1, 100); got != "unterminated\n" && got != "err\n" {
		t.Errorf("tailLog = %q", got)
	}

	var ts bytes.Buffer
	r, _ := parseLogRecord([]byte("2026-11-26T23:00:00.5Z stdout F hi\n"))
	_ = logOptions{timestamps: true}.writeRecord(&ts, r)
	if ts.String() != "2026-11-26T23:00:00.5Z hi\n" {
		t.Errorf("with timestamps: %q", ts.String())
	}
	ts.Reset()
	_ = logOptions{since: r.time.Add(time.Second)}.writeRecord(&ts, r)
	if ts.Len() != 0 {
		t.Errorf("a record before since was written: %q", ts.String())
	}
}
