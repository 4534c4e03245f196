package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var defaultClient = http.DefaultClient

func newRequest(method, url, token string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeTemplateVariant(e *env, name, old, new string) error {
	base, err := os.ReadFile("../../jobtemplates/templates/default.yaml")
	if err != nil {
		return err
	}
	y := strings.Replace(string(base), "name: default", "name: "+name, 1)
	y = strings.Replace(y, old, new, 1)
	return os.WriteFile(filepath.Join(e.tmplDir, name+".yaml"), []byte(y), 0o644)
}
