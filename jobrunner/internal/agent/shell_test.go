package agent

import (
	"bytes"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestShellQuote(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"":                   "''",
		"plain":              "plain",
		"a/b-c_d.e:f,g+h@i%": "a/b-c_d.e:f,g+h@i%",
		"two words":          "'two words'",
		"it's":               `'it'\''s'`,
		"FOO=bar":            "'FOO=bar'",
		"$(rm -rf /)":        "'$(rm -rf /)'",
		"~":                  "'~'",
		"Bash(git push:*)":   "'Bash(git push:*)'",
	}
	for in, want := range tests {
		require.Equal(t, want, ShellQuote(in), "ShellQuote(%q)", in)
	}
}

// TestShellQuoteRoundTrip has /bin/sh read the quoted words back.
func TestShellQuoteRoundTrip(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH")
	}
	words := []string{
		"", " ", "plain", "two words", "it's", `'`, `''`, `"`, `\`, `\'`, `'\''`,
		"$HOME", "${HOME}", "$(echo pwned)", "`echo pwned`", "a;b", "a&&b", "a|b", "a>b", "<",
		"*", "?", "[a]", "{a,b}", "~root", "#comment", "!", "!!", "line\nbreak", "tab\there",
		"\r", "ünïcödé ✓", "😀", "FOO=bar", "-n", "--dangerously-skip-permissions", "%s", "\x01\x7f",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("ab '\"\\$`!*?[]{}();|&<>#~=%\n\té😀")
	for range 200 {
		n := rng.IntN(12)
		var b strings.Builder
		for range n {
			b.WriteRune(alphabet[rng.IntN(len(alphabet))])
		}
		words = append(words, b.String())
	}

	script := `for a in "$@"; do printf '%s\0' "$a"; done`
	out, err := exec.Command(sh, "-c", "set -- "+ShellJoin(words)+"\n"+script).Output()
	require.NoError(t, err)
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if bytes.Count(out, []byte{0}) != len(words) {
		t.Fatalf("sh saw %d words, want %d", bytes.Count(out, []byte{0}), len(words))
	}
	if diff := cmp.Diff(words, got); diff != "" {
		t.Errorf("words (-want +sh):\n%s", diff)
	}
}
