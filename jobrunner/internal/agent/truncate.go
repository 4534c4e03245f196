package agent

import (
	"fmt"
	"unicode/utf8"
)

// MaxSummaryBytes bounds tool-result summaries, tool inputs and messages in events.
const MaxSummaryBytes = 2 << 10

// Truncate returns s if it fits in max bytes. Otherwise it returns a prefix
// of s, cut on a UTF-8 boundary and followed by a marker saying how much was
// kept, that fits in max bytes; when max is too small for the marker, the
// prefix alone. It reports whether it cut.
func Truncate(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	max = maxInt0(max)
	// Size the marker with len(s) in both places: keep <= len(s), so the real marker is no longer.
	keep := max - len(marker(len(s), len(s)))
	if keep <= 0 {
		return s[:runeStart(s, max)], true
	}
	keep = runeStart(s, keep)
	return s[:keep] + marker(keep, len(s)), true
}

func marker(kept, total int) string {
	return fmt.Sprintf("\n[... truncated: %d of %d bytes shown]", kept, total)
}

// runeStart moves i back to the start of the rune it falls in.
func runeStart(s string, i int) int {
	if i >= len(s) {
		return len(s)
	}
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}

func maxInt0(a int) int {
	if a > 0 {
		return a
	}
	return 0
}
