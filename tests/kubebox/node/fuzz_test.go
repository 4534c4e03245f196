package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzExpand checks $(VAR) expansion: it never panics, leaves text without
// a dollar alone, and expands a reference to a known name to its value.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{"", "$(A)", "$$(A)", "x$(A", "$", "$$$", "a $(B) $(C)", "$()"} {
		f.Add(s)
	}
	vars := map[string]string{"A": "1", "B": "$(A)"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	f.Fuzz(func(t *testing.T, s string) {
		got := expand(s, lookup)
		if !strings.Contains(s, "$") && got != s {
			t.Fatalf("expand(%q) = %q, changed text without references", s, got)
		}
		if got := expand("<"+s+">$(A)", lookup); !strings.HasSuffix(got, ">1") && !strings.Contains(s, "$") {
			t.Fatalf("a trailing reference was not expanded: %q", got)
		}
	})
}

// FuzzLogRecord writes content through a container log and reads it back.
func FuzzLogRecord(f *testing.F) {
	for _, s := range []string{"", "line\n", "a\nb", "\n\n", "2026-11-26T23:00:00Z stdout F x\n", strings.Repeat("y", 100)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		_, _ = parseLogRecord(content) // never panics
		path := filepath.Join(t.TempDir(), "log")
		l, stdout, stderr, err := startContainerLog(path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = stdout.Write(content)
		stdout.Close()
		stderr.Close()
		l.wait(10 * time.Second)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		for line := range bytes.Lines(b) {
			r, ok := parseLogRecord(line)
			if !ok {
				t.Fatalf("unparsable record %q", line)
			}
			_ = logOptions{}.writeRecord(&out, r)
		}
		want := content
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(append([]byte{}, want...), '\n') // a final line is ended
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("read back %q, wrote %q", out.Bytes(), content)
		}
	})
}
