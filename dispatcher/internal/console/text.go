package console

import (
	"fmt"
	"strings"
	"unicode"
)

// Visible returns s with the characters that change how text around them
// reads shown as visible marks ("[U+202E]"): bidirectional overrides,
// isolates and marks, zero-width characters and other invisible format
// characters, and control characters other than newline and tab. Text an
// attacker controls is passed through it before it is shown, so an RTL
// override cannot make a file name read backwards. The console's script
// does the same (static/console.js, visible).
func Visible(s string) string {
	if !strings.ContainsFunc(s, hidden) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if hidden(r) {
			fmt.Fprintf(&b, "[U+%04X]", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func hidden(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case r == unicode.ReplacementChar:
		return false
	case unicode.IsControl(r):
		return true
	case unicode.Is(unicode.Cf, r): // format: bidi controls, zero-width joiners, BOM, ...
		return true
	case r == '\u2028' || r == '\u2029': // line and paragraph separators
		return true
	}
	return false
}
