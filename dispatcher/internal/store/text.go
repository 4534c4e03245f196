package store

import (
	"strings"
	"unicode/utf8"
)

// Storable is s as Postgres can store it in text and jsonb: NUL and
// invalid UTF-8 become U+FFFD. It returns s itself when nothing needs
// replacing, so a caller can tell by comparing.
func Storable(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
