package edge_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/dispatcher/internal/edge"
	"github.com/kilnbuild/kiln/schema"
)

// FuzzBody feeds arbitrary bodies to the strict decoder. It never panics;
// a refusal is a 4xx problem naming a field (or the body) and a rule; and
// what it accepts holds the rules: valid JSON of one value, no key outside
// the destination's exact names, no key twice, no NUL, no deeper nesting
// than the limit.
func FuzzBody(f *testing.F) {
	for _, seed := range []string{
		`{"prompt":"x"}`, `{"PROMPT":"x"}`, `{"prompt":"x","prompt":"y"}`, `{"prompt":"a\u0000"}`,
		`{"project":{"name":"p","Name":"q"},"build":{"prompt":"x","variables":{"a":"b"}}}`,
		`{"build":{"variables":{"a\u0000":"1"}}}`, `{"project":[[[[[[]]]]]]}`, "{\"prompt\":\"\xff\"}",
		`{"prompt":"x"} {}`, `{`, ``, `null`, `[]`, `"x"`, `{"\u017fhared":1}`, `{"build":{"auto_commit":"yes"}}`,
	} {
		f.Add([]byte(seed))
	}
	const depth = 6
	body := edge.Body{MaxBytes: 1 << 20, MaxDepth: depth}
	f.Fuzz(func(t *testing.T, in []byte) {
		var dst schema.CreateAndBuild
		err := body.Unmarshal(in, &dst)
		if err != nil {
			var e *edge.Error
			if !errors.As(err, &e) {
				t.Fatalf("not a problem: %T %v", err, err)
			}
			if e.Status < 400 || e.Status > 499 || !strings.Contains(e.Detail, ": ") {
				t.Fatalf("problem without a 4xx status, a field and a rule: %d %q", e.Status, e.Detail)
			}
			for _, fe := range e.Errors {
				if fe.Field == "" || fe.Rule == "" {
					t.Fatalf("field error without field or rule: %+v", fe)
				}
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		var v any
		if err := json.Unmarshal(in, &v); err != nil {
			t.Fatal(err)
		}
		checkAccepted(t, v, "", 0, depth)
	})
}

// known are the exact names of schema.CreateAndBuild, by path.
var known = map[string][]string{
	"":        {"project", "build"},
	"project": {"name", "namespace", "pod_name", "pod_selector", "container", "workdir", "git_remote", "git_branch", "commit_author_name", "commit_author_email", "max_concurrent"},
	"build":   {"prompt", "template", "variables", "auto_commit", "auto_push", "callback_url"},
}

func checkAccepted(t *testing.T, v any, path string, level, max int) {
	switch x := v.(type) {
	case map[string]any:
		if level+1 > max {
			t.Fatalf("accepted nesting deeper than %d at %q", max, path)
		}
		names, fixed := known[path]
		for k, val := range x {
			if strings.ContainsRune(k, 0) {
				t.Fatalf("accepted a NUL in a key at %q", path)
			}
			if fixed && !contains(names, k) {
				t.Fatalf("accepted key %q at %q", k, path)
			}
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			checkAccepted(t, val, sub, level+1, max)
		}
	case []any:
		if level+1 > max {
			t.Fatalf("accepted nesting deeper than %d at %q", max, path)
		}
		for _, e := range x {
			checkAccepted(t, e, path+"[]", level+1, max)
		}
	case string:
		if strings.ContainsRune(x, 0) {
			t.Fatalf("accepted a NUL at %q", path)
		}
	}
}

func contains(names []string, k string) bool {
	for _, n := range names {
		if n == k {
			return true
		}
	}
	return false
}
