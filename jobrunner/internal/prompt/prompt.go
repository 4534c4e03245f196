package prompt

import (
	"fmt"
	"slices"
	"strings"
)

// MissingError names referenced variables that have no value.
type MissingError struct {
	// Names are the missing variables, sorted, without repeats.
	Names []string
}

func (e *MissingError) Error() string {
	q := make([]string, len(e.Names))
	for i, n := range e.Names {
		q[i] = fmt.Sprintf("%q", n)
	}
	noun := "variable"
	if len(q) > 1 {
		noun = "variables"
	}
	return fmt.Sprintf("prompt: missing %s %s", noun, strings.Join(q, ", "))
}

// Render returns the final prompt: preamble and prompt, each expanded with
// vars and joined by a blank line (either may be empty). Missing variables
// of both are reported together in one *MissingError.
func Render(preamble, prompt string, vars map[string]string) (string, error) {
	pre, missPre := expand(preamble, vars)
	body, missBody := expand(prompt, vars)
	if missing := sortedUnique(append(missPre, missBody...)); len(missing) > 0 {
		return "", &MissingError{Names: missing}
	}
	switch {
	case strings.TrimSpace(pre) == "":
		return body, nil
	case strings.TrimSpace(body) == "":
		return pre, nil
	}
	return strings.TrimRight(pre, "\n") + "\n\n" + body, nil
}

// Expand substitutes vars into text.
func Expand(text string, vars map[string]string) (string, error) {
	out, missing := expand(text, vars)
	if missing = sortedUnique(missing); len(missing) > 0 {
		return "", &MissingError{Names: missing}
	}
	return out, nil
}

// Variables lists the variables text references, sorted, without repeats.
func Variables(text string) []string {
	var names []string
	scan(text, func(literal string) {}, func(name string) { names = append(names, name) })
	return sortedUnique(names)
}

func expand(text string, vars map[string]string) (string, []string) {
	var b strings.Builder
	var missing []string
	scan(text, func(literal string) { b.WriteString(literal) }, func(name string) {
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
		}
		b.WriteString(v)
	})
	return b.String(), missing
}

// scan walks text, calling literal for plain text and ref for each reference.
func scan(text string, literal func(string), ref func(name string)) {
	for {
		i := strings.Index(text, "{{")
		if i < 0 {
			literal(text)
			return
		}
		if i > 0 && text[i-1] == '\\' {
			// \{{ is a literal {{.
			literal(text[:i-1])
			literal("{{")
			text = text[i+2:]
			continue
		}
		literal(text[:i])
		name, n, ok := reference(text[i:])
		if !ok {
			// Not a reference: keep one brace and look again from the next,
			// so "{{{ x }}" still finds "{{ x }}".
			literal("{")
			text = text[i+1:]
			continue
		}
		ref(name)
		text = text[i+n:]
	}
}

// reference reads "{{ name }}" at the start of s and returns the name and
// the length of the reference.
func reference(s string) (name string, n int, ok bool) {
	i := 2
	i = skipBlanks(s, i)
	start := i
	for i < len(s) && isNameByte(s[i], i == start) {
		i++
	}
	if i == start {
		return "", 0, false
	}
	name = s[start:i]
	i = skipBlanks(s, i)
	if !strings.HasPrefix(s[i:], "}}") {
		return "", 0, false
	}
	return name, i + 2, true
}

func skipBlanks(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

func isNameByte(c byte, first bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		return true
	case first:
		return false
	}
	return c >= '0' && c <= '9' || c == '-' || c == '.'
}

func sortedUnique(names []string) []string {
	slices.Sort(names)
	return slices.Compact(names)
}
