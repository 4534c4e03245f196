package agent

import "strings"

// ShellQuote quotes s as one word for a POSIX shell. Words made only of
// characters no shell treats specially are returned as they are; anything
// else is wrapped in single quotes, each single quote inside closing the
// quotes, adding an escaped quote and reopening them:
//
//	it's  →  'it'\''s'
//
// A NUL byte cannot travel in argv at all; callers refuse it earlier.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, unsafeShellRune) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func unsafeShellRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return false
	}
	return !strings.ContainsRune("-_./:,+@%", r)
}

// ShellJoin quotes each word with ShellQuote and joins them with spaces,
// for `sh -c`.
func ShellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = ShellQuote(w)
	}
	return strings.Join(q, " ")
}
