package runnerapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// EventError says why a batch was refused: the event at Index, of Type, is
// wrong in Field ("type", "payload", "payload.text", ...) by Rule.
type EventError struct {
	Index int
	Type  schema.EventType
	Field string
	Rule  string
}

func (e *EventError) Error() string {
	return fmt.Sprintf("events[%d].%s: %s", e.Index, e.Field, e.Rule)
}

// ValidateEvents checks a runner's events (schema/runner.go says what a
// runner may post) and returns them as they are stored: each payload
// re-encoded from its payload type, with text Postgres cannot store replaced
// by U+FFFD and such an event flagged (schema.SanitizedKey). repaired counts
// the events so flagged. The first bad event is an *EventError. It has no
// side effects.
func ValidateEvents(in []schema.EventInput) (out []schema.EventInput, repaired int, err error) {
	out = make([]schema.EventInput, len(in))
	for i, e := range in {
		p, fixed, err := ValidatePayload(e.Type, e.Payload)
		if err != nil {
			err.Index = i
			return nil, 0, err
		}
		if fixed {
			repaired++
		}
		out[i] = schema.EventInput{Type: e.Type, Time: e.Time, Payload: p}
	}
	return out, repaired, nil
}

// ValidatePayload checks one runner event's type and payload and returns
// the payload as it is stored; fixed says text in it was repaired (and the
// returned payload carries schema.SanitizedKey). The error's Index is 0.
func ValidatePayload(typ schema.EventType, raw json.RawMessage) (json.RawMessage, bool, *EventError) {
	bad := func(field, rule string) (json.RawMessage, bool, *EventError) {
		return nil, false, &EventError{Type: typ, Field: field, Rule: rule}
	}
	shape, ok := runnerPayloads[typ]
	switch {
	case typ == schema.EventStatus || typ == schema.EventInfo:
		return bad("type", fmt.Sprintf("%q is written by the dispatcher, not a runner", typ))
	case !ok:
		return bad("type", fmt.Sprintf("%s is not an event type a runner may send (%s)", quote(string(typ)), runnerTypeList))
	}
	in := fmt.Sprintf(" (%s event)", typ)
	if len(bytes.TrimSpace(raw)) == 0 {
		return bad("payload", "required: a JSON object"+in)
	}
	if !json.Valid(raw) {
		return bad("payload", "must be valid JSON"+in)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return bad("payload", "must be a JSON object"+in)
	}
	v := reflect.New(shape.typ).Elem()
	seen := make(map[string]bool, len(shape.fields))
	for dec.More() {
		tok, err := dec.Token()
		key, isKey := tok.(string)
		if err != nil || !isKey {
			return bad("payload", "must be valid JSON"+in)
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return bad("payload", "must be valid JSON"+in)
		}
		f, known := shape.fields[key]
		switch {
		case !known:
			return bad("payload."+clip(key), "not a field"+in+"; its fields are "+shape.names)
		case seen[key]:
			return bad("payload."+key, "given twice"+in)
		case string(val) == "null" && !f.nullable:
			return bad("payload."+key, "must be "+f.kind+", not null"+in)
		}
		seen[key] = true
		if err := json.Unmarshal(val, v.Field(f.index).Addr().Interface()); err != nil {
			return bad("payload."+key, "must be "+f.kind+in)
		}
	}
	for _, name := range shape.required {
		if !seen[name] {
			return bad("payload."+name, "required"+in)
		}
	}
	if field, rule := checkValues(v.Interface()); field != "" {
		return bad("payload."+field, rule+in)
	}
	fixed := repairStrings(v)
	fixed = needsRepair(raw) || fixed
	out, err := json.Marshal(v.Interface())
	if err != nil {
		return bad("payload", "cannot be encoded"+in) // not reached: payload types always encode
	}
	if fixed {
		out = append(out[:len(out)-1], `,"`+schema.SanitizedKey+`":true}`...)
		if out[1] == ',' { // the payload encoded as {}
			out = append(out[:1], out[2:]...)
		}
	}
	return out, fixed, nil
}

// checkValues applies the rules of a payload type beyond the shape of its
// fields, and names the field that breaks one.
func checkValues(p any) (field, rule string) {
	switch p := p.(type) {
	case schema.LogPayload:
		switch p.Level {
		case schema.LogInfo, schema.LogWarn, schema.LogError:
		default:
			return "level", fmt.Sprintf("must be %s, %s or %s, not %s", schema.LogInfo, schema.LogWarn, schema.LogError, quote(p.Level))
		}
	case schema.AgentRetryPayload:
		switch {
		case p.Attempt < 1:
			return "attempt", fmt.Sprintf("must be at least 1, not %d", p.Attempt)
		case p.MaxRetries < 0:
			return "max_retries", fmt.Sprintf("must not be negative, not %d", p.MaxRetries)
		case p.DelayMS < 0:
			return "delay_ms", fmt.Sprintf("must not be negative, not %d", p.DelayMS)
		case p.Status != 0 && (p.Status < 100 || p.Status > 599):
			return "status", fmt.Sprintf("must be an HTTP status (100-599) or 0 for none, not %d", p.Status)
		}
	case schema.PermissionDeniedPayload:
		if strings.TrimSpace(p.Tool) == "" {
			return "tool", "must name the tool"
		}
	}
	return "", ""
}

// payloadShape is what ValidatePayload knows of a payload type.
type payloadShape struct {
	typ      reflect.Type
	fields   map[string]fieldShape // by JSON key, exact case
	required []string              // keys without omitempty
	names    string                // every key, for messages
}

type fieldShape struct {
	index    int
	nullable bool   // a slice or pointer: null is its zero value
	kind     string // "a string", "an integer", ...
}

var (
	runnerPayloads = map[schema.EventType]*payloadShape{}
	runnerTypeList string
)

func init() {
	for _, p := range []schema.Payload{schema.AgentTextPayload{}, schema.ToolCallPayload{}, schema.ToolResultPayload{},
		schema.UsagePayload{}, schema.GitPayload{}, schema.LogPayload{}, schema.AgentRetryPayload{}, schema.PermissionDeniedPayload{}} {
		runnerPayloads[p.EventType()] = shapeOf(reflect.TypeOf(p))
	}
	var types []string
	for _, t := range schema.RunnerEventTypes {
		if runnerPayloads[t] == nil {
			panic("runnerapi: no payload shape for runner event type " + string(t))
		}
		types = append(types, string(t))
	}
	if len(runnerPayloads) != len(schema.RunnerEventTypes) {
		panic("runnerapi: payload shapes and schema.RunnerEventTypes disagree")
	}
	runnerTypeList = "one of " + strings.Join(types, ", ")
}

func shapeOf(t reflect.Type) *payloadShape {
	s := &payloadShape{typ: t, fields: map[string]fieldShape{}}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			panic(fmt.Sprintf("runnerapi: %s.%s has no JSON name", t.Name(), f.Name))
		}
		s.fields[name] = fieldShape{index: i, nullable: f.Type.Kind() == reflect.Slice || f.Type.Kind() == reflect.Pointer,
			kind: kindOf(f.Type)}
		if !slices.Contains(strings.Split(opts, ","), "omitempty") {
			s.required = append(s.required, name)
		}
		names = append(names, name)
	}
	s.names = strings.Join(names, ", ")
	return s
}

func kindOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return kindOf(t.Elem())
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "an array of strings"
		}
	}
	panic("runnerapi: no rule for payload fields of type " + t.String())
}

// repairStrings makes every string in v (a payload struct: strings, string
// slices) storable, and reports whether one changed.
func repairStrings(v reflect.Value) bool {
	changed := false
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case f.Kind() == reflect.String:
			if s := store.Storable(f.String()); s != f.String() {
				f.SetString(s)
				changed = true
			}
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			for j := range f.Len() {
				if s := store.Storable(f.Index(j).String()); s != f.Index(j).String() {
					f.Index(j).SetString(s)
					changed = true
				}
			}
		}
	}
	return changed
}

// needsRepair reports whether JSON text raw, once decoded, held text
// Postgres cannot store: invalid UTF-8, a \u0000 escape, or an unpaired
// surrogate escape (a decoder turns the first and the last into U+FFFD
// silently; this says it happened).
func needsRepair(raw []byte) bool {
	if !utf8.Valid(raw) {
		return true
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' {
			continue // \" \\ \n ...: skipped whole, so \\u is no escape
		}
		r, ok := hex4(raw, i+1)
		if !ok {
			return false // not JSON; the decoder refuses it
		}
		i += 4 // at the escape's last digit
		switch {
		case r == 0, r >= 0xDC00 && r < 0xE000:
			return true
		case r >= 0xD800 && r < 0xDC00:
			if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if lo, ok := hex4(raw, i+3); ok && lo >= 0xDC00 && lo < 0xE000 {
					i += 6
					continue
				}
			}
			return true
		}
	}
	return false
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[at:at+4]), 16, 16)
	return rune(n), err == nil
}

// repairResult makes a result's text storable and names the fields it
// changed; raw is the posted body, whose fields say what its decoding
// replaced silently (invalid UTF-8, unpaired surrogates).
func repairResult(raw []byte, res *schema.BuildResult) []string {
	var fields []string
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) == nil {
		for k, v := range top {
			if needsRepair(v) {
				fields = append(fields, clip(k))
			}
		}
	}
	fix := func(name string, ss ...*string) {
		for _, s := range ss {
			if r := store.Storable(*s); r != *s {
				*s = r
				if !slices.Contains(fields, name) {
					fields = append(fields, name)
				}
			}
		}
	}
	reason := string(res.Reason)
	fix("output", &res.Output)
	fix("error", &res.Error)
	fix("commit_sha", &res.CommitSHA)
	fix("reason", &reason)
	res.Reason = schema.Reason(reason)
	fix("session_id", &res.SessionID)
	for i := range res.FilesChanged {
		fix("files_changed", &res.FilesChanged[i])
	}
	for i := range res.PermissionDenials {
		d := &res.PermissionDenials[i]
		fix("permission_denials", &d.Tool, &d.Summary)
	}
	for i := range res.Artifacts {
		a := &res.Artifacts[i]
		fix("artifacts", &a.Name, &a.Path, &a.SHA256, &a.URL)
	}
	slices.Sort(fields)
	return fields
}

// quote quotes a runner's string for a message, bounded.
func quote(s string) string { return strconv.Quote(clip(s)) }

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
