package schema_test

import (
	"testing"

	"github.com/kilnbuild/kiln/schema"
)

func TestConsoleURL(t *testing.T) {
	t.Parallel()
	const id = "0193f0b2-6c1e-7d1a-9c4e-2f1f3b7a9d10"
	for _, tc := range []struct{ public, want string }{
		{"", ""},
		{"https://kiln.example.com", "https://kiln.example.com/ui/builds/" + id},
		{"https://kiln.example.com/", "https://kiln.example.com/ui/builds/" + id},
		{"https://example.com/kiln", "https://example.com/kiln/ui/builds/" + id},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/ui/builds/" + id},
	} {
		if got := schema.ConsoleURL(tc.public, id); got != tc.want {
			t.Errorf("ConsoleURL(%q) = %q, want %q", tc.public, got, tc.want)
		}
	}
}
