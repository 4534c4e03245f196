package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

// decodeJSON reads r's body into dst strictly: JSON only, one value, no
// unknown fields, at most MaxBodyBytes.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return newProblem(http.StatusUnsupportedMediaType, "Content-Type: must be application/json (got %q)", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return newProblem(http.StatusRequestEntityTooLarge, "body: must be at most %d bytes", MaxBodyBytes)
		}
		return newProblem(http.StatusBadRequest, "body: could not be read: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonProblem(body, err)
	}
	if dec.More() {
		return newProblem(http.StatusBadRequest, "body: must hold a single JSON value; more data follows at byte %d", dec.InputOffset())
	}
	return nil
}

func jsonProblem(body []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := position(body, max(se.Offset-1, 0))
		return newProblem(http.StatusBadRequest, "body: malformed JSON at line %d, column %d (byte %d): %s", line, col, se.Offset, se.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		if len(bytes.TrimSpace(body)) == 0 {
			return newProblem(http.StatusBadRequest, "body: required, got an empty body")
		}
		line, col := position(body, int64(len(body)))
		return newProblem(http.StatusBadRequest, "body: malformed JSON: unexpected end at line %d, column %d", line, col)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		rule := fmt.Sprintf("must be %s, got JSON %s", jsonTypeName(te.Type.String()), te.Value)
		if field == "variables" || strings.HasSuffix(field, ".variables") {
			rule = fmt.Sprintf("values must be strings, got JSON %s", te.Value)
		}
		return fieldProblem(http.StatusUnprocessableEntity, field, rule)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fieldProblem(http.StatusUnprocessableEntity, name, "unknown field")
	}
	return newProblem(http.StatusBadRequest, "body: malformed JSON: %v", err)
}

func jsonTypeName(goType string) string {
	switch {
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "float"):
		return "a number"
	case strings.HasPrefix(goType, "map["):
		return "an object of strings"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
