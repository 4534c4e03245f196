package edge

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// DefaultMaxDepth bounds the nesting of objects and arrays in a body.
const DefaultMaxDepth = 32

// Body is what one route accepts as its JSON body. Its Decode is the one
// strict decoder of the dispatcher:
//
//   - Content-Type must be application/json (or a +json type), with no
//     charset but utf-8 (415);
//   - a declared Content-Length over MaxBytes is refused before anything is
//     read, and a body that grows past it while being read (413);
//   - the body must be UTF-8, one JSON value, nested at most MaxDepth deep (400);
//   - object keys must be the destination's JSON names exactly (encoding/json
//     alone matches them case-insensitively), each at most once, and known
//     (422 naming the field);
//   - no string may carry NUL (U+0000), which Postgres cannot store (422
//     naming the field), unless AllowNUL;
//   - values must fit their fields' types (422 naming the field).
type Body struct {
	MaxBytes int64 // required
	MaxDepth int   // default DefaultMaxDepth
	// AllowNUL lets strings carry U+0000: for callers that replace it
	// themselves (the runner protocol's agent output).
	AllowNUL bool
	// AllowInvalidUTF8 lets the body carry bytes that are not UTF-8 (JSON
	// decoding turns them into U+FFFD): for a runner's agent output, which is
	// repaired and flagged rather than refused.
	AllowInvalidUTF8 bool
}

// Decode reads r's body into dst as b says, or returns the problem to answer.
func (b Body) Decode(w http.ResponseWriter, r *http.Request, dst any) error {
	if b.MaxBytes <= 0 {
		panic("edge: Body.MaxBytes must be positive")
	}
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	if r.ContentLength > b.MaxBytes {
		return tooLarge(b.MaxBytes)
	}
	if r.Body == nil {
		return b.Unmarshal(nil, dst)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, b.MaxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(b.MaxBytes)
		}
		return &Error{Status: http.StatusBadRequest, Err: err,
			Detail: "body: could not be read in full (the client sent less than it declared, or too slowly)"}
	}
	return b.Unmarshal(body, dst)
}

func tooLarge(n int64) error {
	return Errorf(http.StatusRequestEntityTooLarge, "body: must be at most %d bytes", n)
}

// Unmarshal decodes body, already read, into dst with every rule of Decode
// but the Content-Type and the size.
func (b Body) Unmarshal(body []byte, dst any) error {
	if !b.AllowInvalidUTF8 && !utf8.Valid(body) {
		return Errorf(http.StatusBadRequest, "body: must be UTF-8 (invalid byte sequence at byte %d)", invalidUTF8At(body))
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return Errorf(http.StatusBadRequest, "body: required, got an empty body")
	}
	c := checker{dec: json.NewDecoder(bytes.NewReader(body)), maxDepth: b.MaxDepth, allowNUL: b.AllowNUL}
	if c.maxDepth <= 0 {
		c.maxDepth = DefaultMaxDepth
	}
	c.dec.UseNumber()
	if err := c.value(reflect.TypeOf(dst), "", 0); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			// Say where as encoding/json's decoder does: the tokenizer
			// counts offsets differently from one error to the next.
			var v any
			if derr := json.NewDecoder(bytes.NewReader(body)).Decode(&v); derr != nil {
				err = derr
			}
		}
		return jsonProblem(body, err)
	}
	end := c.dec.InputOffset()
	if _, err := c.dec.Token(); err != io.EOF {
		rest := bytes.TrimLeft(body[end:], " \t\r\n")
		return Errorf(http.StatusBadRequest, "body: must hold a single JSON value; more data follows at byte %d",
			len(body)-len(rest))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonProblem(body, err)
	}
	return nil
}

func checkContentType(ct string) error {
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return Errorf(http.StatusUnsupportedMediaType, "Content-Type: must be application/json (got %q)", clip(ct, 100))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return Errorf(http.StatusUnsupportedMediaType, "Content-Type: the charset must be utf-8 (got %q)", clip(cs, 100))
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// checker walks a body's tokens beside the type it will be decoded into,
// before encoding/json decodes it: it refuses what encoding/json lets pass.
type checker struct {
	dec      *json.Decoder
	maxDepth int
	allowNUL bool
}

// ruleError is a field problem found while walking; jsonProblem passes it on.
type ruleError struct{ e *Error }

func (r ruleError) Error() string { return r.e.Error() }

func (c *checker) fail(status int, field, rule string) error {
	return ruleError{Field(status, field, rule)}
}

func (c *checker) value(t reflect.Type, path string, depth int) error {
	tok, err := c.dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case json.Delim:
		if depth+1 > c.maxDepth {
			return ruleError{Errorf(http.StatusBadRequest, "body: nested deeper than %d levels at %s", c.maxDepth,
				orBody(path))}
		}
		if v == '{' {
			return c.object(t, path, depth+1)
		}
		return c.array(t, path, depth+1)
	case string:
		if !c.allowNUL && strings.IndexByte(v, 0) >= 0 {
			return c.fail(http.StatusUnprocessableEntity, orBody(path), "must not contain NUL (U+0000)")
		}
	}
	return nil
}

func (c *checker) object(t reflect.Type, path string, depth int) error {
	sh := shapeOf(t)
	seen := map[string]struct{}{}
	for c.dec.More() {
		tok, err := c.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if !c.allowNUL && strings.IndexByte(key, 0) >= 0 {
			return c.fail(http.StatusUnprocessableEntity, orBody(path), "keys must not contain NUL (U+0000)")
		}
		field := join(path, key)
		if _, dup := seen[key]; dup {
			return c.fail(http.StatusUnprocessableEntity, field, "appears more than once")
		}
		seen[key] = struct{}{}
		var next reflect.Type
		switch sh.kind {
		case shapeStruct:
			ft, ok := sh.fields[key]
			if !ok {
				rule := "unknown field"
				for name := range sh.fields {
					if strings.EqualFold(name, key) {
						rule = fmt.Sprintf("unknown field (keys are case-sensitive: did you mean %q?)", name)
						break
					}
				}
				return c.fail(http.StatusUnprocessableEntity, field, rule)
			}
			next = ft
		case shapeMap, shapeList:
			next = sh.elem
		}
		if err := c.value(next, field, depth); err != nil {
			return err
		}
	}
	_, err := c.dec.Token() // }
	return err
}

func (c *checker) array(t reflect.Type, path string, depth int) error {
	sh := shapeOf(t)
	var elem reflect.Type
	if sh.kind == shapeList {
		elem = sh.elem
	}
	for i := 0; c.dec.More(); i++ {
		if err := c.value(elem, path+"["+strconv.Itoa(i)+"]", depth); err != nil {
			return err
		}
	}
	_, err := c.dec.Token() // ]
	return err
}

func join(path, key string) string {
	if key == "" {
		key = `""`
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func orBody(path string) string {
	if path == "" {
		return "body"
	}
	return path
}

// shape is what a Go type allows in JSON, as far as the checker looks.
type shape struct {
	kind   int
	fields map[string]reflect.Type // shapeStruct: JSON name → type
	elem   reflect.Type            // shapeMap, shapeList: the values' type
}

const (
	shapeFree   = iota // no rule on keys: any, json.RawMessage, an Unmarshaler, a scalar
	shapeStruct        // keys must be the struct's JSON names, exactly
	shapeMap           // any key; values of elem
	shapeList          // a slice or array of elem
)

// maxEmbedDepth bounds how deep embedded structs are followed.
const maxEmbedDepth = 8

var (
	shapes           sync.Map // reflect.Type → shape
	freeShape        = shape{kind: shapeFree}
	unmarshalerTypes = []reflect.Type{reflect.TypeFor[json.Unmarshaler](), reflect.TypeFor[encoding.TextUnmarshaler]()}
)

func shapeOf(t reflect.Type) shape {
	for t != nil && t.Kind() == reflect.Pointer {
		if customDecoding(t) {
			return freeShape
		}
		t = t.Elem()
	}
	if t == nil || customDecoding(t) {
		return freeShape
	}
	if s, ok := shapes.Load(t); ok {
		return s.(shape)
	}
	var s shape
	switch t.Kind() {
	case reflect.Struct:
		s = shape{kind: shapeStruct, fields: jsonFields(t)}
	case reflect.Map:
		s = shape{kind: shapeMap, elem: t.Elem()}
	case reflect.Slice, reflect.Array:
		s = shape{kind: shapeList, elem: t.Elem()}
	default:
		s = freeShape
	}
	shapes.Store(t, s)
	return s
}

// customDecoding reports whether t (or *t) decodes itself.
func customDecoding(t reflect.Type) bool {
	for _, u := range unmarshalerTypes {
		if t.Implements(u) || (t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(u)) {
			return true
		}
	}
	return false
}

// jsonFields returns the JSON names of t's fields as encoding/json sees
// them: exported fields by tag name or Go name, "-" left out, the fields of
// embedded structs promoted unless a shallower or tagged field has the name.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	type found struct {
		typ    reflect.Type
		depth  int
		tagged bool
		clash  bool
	}
	byName := map[string]*found{}
	var walk func(t reflect.Type, depth int, visited map[reflect.Type]bool)
	walk = func(t reflect.Type, depth int, visited map[reflect.Type]bool) {
		if depth > maxEmbedDepth || visited[t] {
			return
		}
		visited[t] = true
		defer delete(visited, t)
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if name == "" && et.Kind() == reflect.Struct {
					walk(et, depth+1, visited)
					continue
				}
				if !f.IsExported() && et.Kind() != reflect.Struct {
					continue
				}
			} else if !f.IsExported() {
				continue
			}
			tagged := name != ""
			if !tagged {
				name = f.Name
			}
			prev := byName[name]
			switch {
			case prev == nil, depth < prev.depth, depth == prev.depth && tagged && !prev.tagged:
				byName[name] = &found{typ: ft, depth: depth, tagged: tagged}
			case depth == prev.depth && tagged == prev.tagged:
				prev.clash = true
			}
		}
	}
	walk(t, 0, map[reflect.Type]bool{})
	out := make(map[string]reflect.Type, len(byName))
	for name, f := range byName {
		if !f.clash {
			out[name] = f.typ
		}
	}
	return out
}

// jsonProblem turns a decoding error into the problem to answer.
func jsonProblem(body []byte, err error) error {
	var re ruleError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &re):
		return re.e
	case errors.As(err, &se):
		line, col := position(body, max(se.Offset-1, 0))
		return Errorf(http.StatusBadRequest, "body: malformed JSON at line %d, column %d (byte %d): %s", line, col, se.Offset, se.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		line, col := position(body, int64(len(body)))
		return Errorf(http.StatusBadRequest, "body: malformed JSON: unexpected end at line %d, column %d", line, col)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		rule := fmt.Sprintf("must be %s, got JSON %s", jsonTypeName(te.Type), te.Value)
		if field == "variables" || strings.HasSuffix(field, ".variables") {
			rule = fmt.Sprintf("values must be strings, got JSON %s", te.Value)
		}
		return Field(http.StatusUnprocessableEntity, field, rule)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return Field(http.StatusUnprocessableEntity, name, "unknown field")
	}
	return Errorf(http.StatusBadRequest, "body: malformed JSON: %v", err)
}

func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Map:
		if t.Elem().Kind() == reflect.String {
			return "an object of strings"
		}
		return "an object"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Interface:
		return "a JSON value"
	}
	return "an object"
}

func position(b []byte, off int64) (line, col int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col = 1, 1
	for _, c := range b[:off] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}
