package edge

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// PathID returns the id in r's path parameter name if it is a UUID in its
// canonical form: 36 characters, lowercase hex, hyphens at 8-4-4-4-12, as
// Kiln writes ids. Other spellings that UUID parsers take (uppercase,
// braces, "urn:uuid:", no hyphens) are not Kiln's ids: the resource does
// not exist.
func PathID(r *http.Request, name string) (string, bool) {
	id := chi.URLParam(r, name)
	return id, CanonicalID(id)
}

// PathText returns r's path parameter name if it is text a name or a path
// can be: valid UTF-8 without NUL (a "%00" or "%ff" in a URL decodes to
// bytes no stored name has).
func PathText(r *http.Request, name string) (string, bool) {
	v := chi.URLParam(r, name)
	return v, utf8.ValidString(v) && strings.IndexByte(v, 0) < 0
}

// CanonicalID reports whether id is a UUID in canonical lowercase form.
func CanonicalID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// NoSuch returns the 404 of a path id that names nothing (what: "build",
// "project"); it wraps store.ErrNotFound.
func NoSuch(what, id string) error {
	if len(id) > 64 {
		id = id[:64] + "…"
	}
	return &Error{Status: http.StatusNotFound, Err: store.ErrNotFound,
		Detail: fmt.Sprintf("%s %q: not found (ids are lowercase UUIDs)", what, id)}
}

// HeaderText returns the value of r's header name, checked as text: valid
// UTF-8, no control characters (NUL included), at most maxBytes bytes. A
// value that breaks a rule is a 400 naming the header.
func HeaderText(r *http.Request, name string, maxBytes int) (string, error) {
	v := r.Header.Get(name)
	switch {
	case len(v) > maxBytes:
		return "", Field(http.StatusBadRequest, name, fmt.Sprintf("must be at most %d bytes", maxBytes))
	case !utf8.ValidString(v):
		return "", Field(http.StatusBadRequest, name, "must be valid UTF-8")
	}
	for _, c := range v {
		if unicode.IsControl(c) {
			return "", Field(http.StatusBadRequest, name, fmt.Sprintf("must not contain control characters (got %U)", c))
		}
	}
	return v, nil
}
