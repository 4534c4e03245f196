package jobtemplates

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/validate/content"

	"github.com/kilnbuild/kiln/schema"
)

// FuzzParse: Parse never panics, and whatever it accepts is valid, renders,
// and never grants what Validate promises to refuse.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"default", "readonly"} {
		b, err := embedded.ReadFile("templates/" + name + ".yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimalYAML))
	f.Add([]byte("agent: {allowedTools: [Bash]}"))
	f.Add([]byte("agent: {allowedTools: ['Bash(git  push:*)'], permissionMode: bypassPermissions}"))
	f.Add([]byte("agent: {allowedTools: [LS, 'read(x)'], permissionMode: acceptEdits, acceptEditsFilesystemCommands: true}"))
	f.Add([]byte("tolerations: [{operator: Exists}]\nresources: {limits: {cpu: 1e3}}\nagent: {allowedTools: [Read]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tmpl, err := Parse("f.yaml", data)
		if err != nil {
			return
		}
		if err := Validate(tmpl); err != nil {
			t.Fatalf("accepted template fails Validate: %v", err)
		}
		if tmpl.Agent.PermissionMode == "bypassPermissions" {
			t.Fatal("accepted bypassPermissions")
		}
		if tmpl.Agent.PermissionMode == PermissionAcceptEdits && !tmpl.Agent.AcceptEditsFilesystemCommands {
			t.Fatal("accepted acceptEdits without acceptEditsFilesystemCommands")
		}
		for _, tool := range tmpl.Agent.AllowedTools {
			if tool == "Bash" || strings.HasPrefix(tool, "Bash(git commit") || strings.HasPrefix(tool, "Bash(git push") {
				t.Fatalf("accepted allowed tool %q", tool)
			}
		}
		for _, tool := range slices.Concat(tmpl.Agent.AllowedTools, tmpl.Agent.DisallowedTools) {
			name, _, _ := strings.Cut(tool, "(")
			if !slices.Contains(ClaudeCode2_1_328Tools, name) && !strings.HasPrefix(name, "mcp__") {
				t.Fatalf("accepted unknown tool %q", tool)
			}
		}
		job, _, err := Render(RenderInput{
			Build:         schema.Build{ID: "b", Spec: schema.BuildSpec{Template: "f"}},
			Template:      tmpl,
			Namespace:     "ns",
			DispatcherURL: "http://d",
			RunnerToken:   "fuzz-token-value",
		})
		if err != nil {
			t.Fatalf("accepted template does not render: %v", err)
		}
		b, _ := json.Marshal(job)
		if strings.Contains(string(b), "fuzz-token-value") {
			t.Fatal("token in job")
		}
	})
}

// FuzzNames: names and label values are always valid and deterministic.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"", "0b9f3c4e-6a51-4f2e-9d3b-5c1f7e2a8d10", "A_b", "-", "日本", strings.Repeat("x", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name := JobName(s)
		if msgs := content.IsDNS1123Label(name); len(msgs) > 0 {
			t.Fatalf("JobName(%q) = %q: %v", s, name, msgs)
		}
		if name != JobName(s) {
			t.Fatal("JobName not deterministic")
		}
		if v := LabelValue(s); len(content.IsLabelValue(v)) > 0 {
			t.Fatalf("LabelValue(%q) = %q: %v", s, v, content.IsLabelValue(v))
		}
	})
}
