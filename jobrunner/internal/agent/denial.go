package agent

import (
	"encoding/json"
	"strings"
)

// MaxDenialSummaryBytes bounds PermissionDenial.Summary.
const MaxDenialSummaryBytes = 200

// summaryKeys are the input fields that say what a tool call was about, in
// order of preference: the Bash command, a file, a URL, a search.
var summaryKeys = []string{"command", "file_path", "notebook_path", "url", "pattern", "path", "query", "prompt", "description"}

// Summary is a short account of the denied call's input, at most
// MaxDenialSummaryBytes: the Bash command, the file path, the URL, the
// search pattern; otherwise the input itself. Whitespace runs (newlines
// too) become one space. An input cut short (see Input) still yields its
// first fields.
func (d PermissionDenial) Summary() string {
	s := inputSummary(d.Input)
	s = strings.Join(strings.Fields(s), " ")
	return clipText(s, MaxDenialSummaryBytes)
}

// inputSummary picks the most telling string field of a tool's input. It
// reads the JSON token by token, so a prefix cut by Truncate is read as far
// as it goes.
func inputSummary(input string) string {
	dec := json.NewDecoder(strings.NewReader(input))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return input
	}
	found := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		var s string
		if json.Unmarshal(v, &s) == nil && strings.TrimSpace(s) != "" {
			if _, dup := found[key]; !dup {
				found[key] = s
			}
		}
	}
	for _, k := range summaryKeys {
		if s, ok := found[k]; ok {
			return s
		}
	}
	return input
}

// clipText returns s cut to at most max bytes on a rune boundary, ending
// with "…" when cut.
func clipText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const ell = "…"
	keep := max - len(ell)
	if keep <= 0 {
		return s[:runeStart(s, max)]
	}
	s = s[:runeStart(s, keep)]
	return strings.TrimRight(s, " ") + ell
}
