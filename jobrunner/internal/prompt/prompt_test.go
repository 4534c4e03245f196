package prompt

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestExpand(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"name": "Acme", "ticket": "KLN-7", "repo.url": "https://git.example/acme", "a-b": "dash", "_x": "under",
		"inject": "{{ name }} and {{ missing }}", "empty": "", "unused": "never referenced",
	}
	tests := []struct {
		name, in, want string
	}{
		{"no references", "Just text.", "Just text."},
		{"empty", "", ""},
		{"spaced", "Fix {{ ticket }} for {{ name }}.", "Fix KLN-7 for Acme."},
		{"tight", "{{ticket}}{{name}}", "KLN-7Acme"},
		{"tabs and extra spaces", "{{\tname   }}", "Acme"},
		{"dots and dashes", "{{ repo.url }} {{a-b}} {{_x}}", "https://git.example/acme dash under"},
		{"empty value", "[{{ empty }}]", "[]"},
		{"repeated", "{{name}} {{name}}", "Acme Acme"},
		{"values are not expanded again", "{{ inject }}", "{{ name }} and {{ missing }}"},
		{"escaped", `\{{ name }} is written {{ name }}`, "{{ name }} is written Acme"},
		{"go template stays", "{{ .Field }} {{- trim }} {{#each}} {{ a b }} {{}}", "{{ .Field }} {{- trim }} {{#each}} {{ a b }} {{}}"},
		{"unclosed stays", "{{ name", "{{ name"},
		{"single braces", "{ name } }}", "{ name } }}"},
		{"triple braces", "{{{ name }}}", "{Acme}"},
		{"newline inside is not a reference", "{{\nname}}", "{{\nname}}"},
		{"digit first is not a name", "{{ 1x }}", "{{ 1x }}"},
		{"unicode around", "héllo {{name}} ✓", "héllo Acme ✓"},
		{"code block", "```js\nconst o = {{a: 1}};\n```", "```js\nconst o = {{a: 1}};\n```"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Expand(tt.in, vars)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestExpandMissing(t *testing.T) {
	t.Parallel()
	_, err := Expand("{{ zeta }} {{alpha}} {{ zeta }} {{ there }} \\{{ escaped }}", map[string]string{"there": "x"})
	var me *MissingError
	require.True(t, errors.As(err, &me))
	require.Equal(t, []string{"alpha", "zeta"}, me.Names)
	require.EqualError(t, err, `prompt: missing variables "alpha", "zeta"`)

	_, err = Expand("{{ one }}", nil)
	require.EqualError(t, err, `prompt: missing variable "one"`)
}

func TestRender(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"project": "acme", "ticket": "KLN-7"}
	tests := []struct {
		name, preamble, prompt, want string
	}{
		{"both", "You work on {{ project }}.\nNever commit.\n", "Fix {{ticket}}.", "You work on acme.\nNever commit.\n\nFix KLN-7."},
		{"no preamble", "", "Fix {{ticket}}.", "Fix KLN-7."},
		{"blank preamble", " \n", "Fix it.", "Fix it."},
		{"no prompt", "Preamble {{ project }}", "", "Preamble acme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Render(tt.preamble, tt.prompt, vars)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	_, err := Render("{{ b }} {{ project }}", "{{ a }} {{ b }}", vars)
	require.EqualError(t, err, `prompt: missing variables "a", "b"`)
}

func TestVariables(t *testing.T) {
	t.Parallel()
	got := Variables("{{ b }} {{a}} \\{{ c }} {{ .d }} {{ b }} {{e.f-g}}")
	if diff := cmp.Diff([]string{"a", "b", "e.f-g"}, got); diff != "" {
		t.Error(diff)
	}
	require.Empty(t, Variables("plain"))
}

// FuzzRender checks, for any text: no panic; with no variables set, the
// error names exactly the referenced variables; with every one set,
// rendering succeeds and inserts one value per reference; text without "{{"
// is returned unchanged.
func FuzzRender(f *testing.F) {
	for _, s := range []string{"", "plain", "{{ a }}", "{{a}}{{b}}", `\{{ a }}`, "{{{ a }}}", "{{ a", "{{ .x }}",
		"{{\ta\t}}", "x {{ a.b-c }} y {{ a }}", "é{{é}}", "\\\\{{ a }}", "{{ a }}}}{{", "{\\{{ a }}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		names := Variables(text)
		if !strings.Contains(text, "{{") {
			if len(names) != 0 {
				t.Fatalf("names %q in text without braces", names)
			}
			out, err := Expand(text, nil)
			if err != nil || out != text {
				t.Fatalf("Expand(%q) = %q, %v", text, out, err)
			}
			return
		}

		_, err := Expand(text, nil)
		var me *MissingError
		if len(names) == 0 {
			if err != nil {
				t.Fatalf("Expand(%q) with no references: %v", text, err)
			}
		} else if !errors.As(err, &me) || !slices.Equal(me.Names, names) {
			t.Fatalf("Expand(%q): %v, want missing %q", text, err, names)
		}

		// With every variable set, expansion succeeds and puts the value
		// exactly where the references were.
		refs := 0
		scan(text, func(string) {}, func(string) { refs++ })
		if refs < len(names) {
			t.Fatalf("%d references of %d names", refs, len(names))
		}
		vars := map[string]string{}
		for _, n := range names {
			vars[n] = "\x00"
		}
		out, err := Expand(text, vars)
		if err != nil {
			t.Fatalf("Expand(%q) with all variables: %v", text, err)
		}
		if got := strings.Count(out, "\x00") - strings.Count(text, "\x00"); got != refs {
			t.Fatalf("Expand(%q) = %q: %d values inserted, want %d", text, out, got, refs)
		}
		if _, err := Render(text, text, vars); err != nil {
			t.Fatalf("Render: %v", err)
		}
	})
}
