package nsinit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, spec Spec) (string, error, error) {
	t.Helper()
	var out bytes.Buffer
	s := NewStarter()
	defer s.Close()
	p, err := s.Start(spec, nil, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	serr := p.StartError()
	werr := p.Cmd.Wait()
	return out.String(), serr, werr
}

func TestMountsHostnameDir(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "token"), []byte("secret-a"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "var/run/secrets")
	out, serr, werr := run(t, Spec{
		Args:     []string{"sh", "-c", `cat ` + target + `/token; echo; hostname; pwd; touch ` + target + `/x 2>/dev/null || echo ro`},
		Env:      []string{"PATH=/usr/bin:/bin"},
		Dir:      filepath.Join(t.TempDir(), "work"),
		Hostname: "pod-a",
		Mounts:   []Mount{{Source: src, Target: target, ReadOnly: true}},
	})
	if serr != nil || werr != nil {
		t.Fatalf("start %v wait %v out %s", serr, werr, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[0] != "secret-a" || lines[1] != "pod-a" || !strings.HasSuffix(lines[2], "/work") || lines[3] != "ro" {
		t.Fatalf("unexpected output %q", out)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("mount leaked to the host: %v", entries)
	}
	host, _ := os.Hostname()
	if host == "pod-a" {
		t.Fatal("hostname leaked to the host")
	}
}

func TestNotFound(t *testing.T) {
	_, serr, werr := run(t, Spec{Args: []string{"no-such-program-kubebox"}, Env: []string{"PATH=/usr/bin"}})
	if serr == nil || !strings.Contains(serr.Error(), "executable file not found") {
		t.Fatalf("start error %v", serr)
	}
	if werr == nil {
		t.Fatal("expected exit failure")
	}
}

func BenchmarkStart(b *testing.B) {
	s := NewStarter()
	defer s.Close()
	for b.Loop() {
		p, err := s.Start(Spec{Args: []string{"/bin/true"}}, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.StartError(); err != nil {
			b.Fatal(err)
		}
		p.Cmd.Wait()
	}
}
