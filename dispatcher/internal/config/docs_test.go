package config

import (
	"os"
	"strings"
	"testing"
)

// docs/configuration.md lists every setting with its flag and default, as the README does.
func TestConfigurationDocIsCurrent(t *testing.T) {
	b, err := os.ReadFile("../../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, s := range Settings {
		def := "(empty)"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		if row := "| `" + s.Env + "` | `--" + s.Flag + "` | " + def + " |"; !strings.Contains(doc, row) {
			t.Errorf("docs/configuration.md lacks the row %s", row)
		}
	}
}
