package api

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// FuzzBuildSpecBody feeds arbitrary bodies through the same decoding and
// validation a submission gets: it never panics, and every refusal is a
// problem that names a field (or the body) and a rule.
func FuzzBuildSpecBody(f *testing.F) {
	for _, seed := range []string{
		`{"prompt":"x"}`,
		`{"prompt":"x","template":"default","variables":{"a":"b"},"auto_commit":true,"auto_push":false,"callback_url":"https://h/x"}`,
		`{"prompt":"","variables":{"a-b":"1"},"callback_url":"ftp://x"}`,
		`{"prompt":"x","max_turns":201,"max_budget_usd":-1,"branch":"kiln/{task_id}","fallback":"fresh"}`,
		`{"prompt":"x","max_turns":3,"max_budget_usd":0.5,"branch":"review/{task_id}"}`,
		`{"prompt":1}`, `{"variables":{"a":1}}`, `{"promt":"x"}`, `[]`, `{`, ``, `{"prompt":"x"} {}`, "{\n\"prompt\": \"x\",\n oops}",
	} {
		f.Add([]byte(seed))
	}
	templates := jobtemplates.Embedded()
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/projects/x/builds", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var spec schema.BuildSpec
		err := specBody.Decode(httptest.NewRecorder(), r, &spec)
		if err == nil {
			err = intake.ValidateSpec(&spec, templates, "")
		}
		if err == nil {
			if strings.TrimSpace(spec.Prompt) == "" || len(spec.Prompt) > intake.MaxPromptBytes || len(spec.Variables) > intake.MaxVariables {
				t.Fatalf("accepted an invalid spec: %+v", spec)
			}
			text := []string{spec.Prompt, spec.Template, spec.CallbackURL}
			for k, v := range spec.Variables {
				text = append(text, k, v)
			}
			for _, s := range text {
				if strings.ContainsRune(s, 0) {
					t.Fatalf("accepted a NUL, which Postgres cannot store: %q", s)
				}
			}
			return
		}
		var pe *edge.Error
		var ve intake.ValidationError
		switch {
		case errors.As(err, &pe):
			if pe.Status < 400 || pe.Status > 499 || pe.Detail == "" || !strings.Contains(pe.Detail, ":") {
				t.Fatalf("problem without a field and rule: %d %q", pe.Status, pe.Detail)
			}
		case errors.As(err, &ve):
			for _, fe := range ve {
				if fe.Field == "" || fe.Rule == "" {
					t.Fatalf("validation error without field or rule: %+v", fe)
				}
			}
		default:
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
	})
}
