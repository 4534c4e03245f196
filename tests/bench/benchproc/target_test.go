package benchproc_test

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

func TestTarget(t *testing.T) {
	var b bytes.Buffer
	benchproc.Target(&b, "intake vs plain INSERT at 32 clients", "0.43", "≥ 0.5", false)
	benchproc.Target(&b, "held at 15.5 s", "0 connections", "0", true)
	want := "target: intake vs plain INSERT at 32 clients = 0.43 (goal ≥ 0.5) missed\n" +
		"target: held at 15.5 s = 0 connections (goal 0) met\n"
	if got := b.String(); got != want {
		t.Fatalf("Target printed\n%q\nwant\n%q", got, want)
	}
	// The form a script reads back.
	line := regexp.MustCompile(`^target: (.+) = (.+) \(goal (.+)\) (met|missed)$`)
	for _, l := range bytes.Split(bytes.TrimSpace(b.Bytes()), []byte("\n")) {
		if !line.Match(l) {
			t.Errorf("line %q does not parse as a target line", l)
		}
	}
}
