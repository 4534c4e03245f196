package e2e

import (
	"io"
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

// apiRaw GETs path from d as the admin and returns the raw body.
func (e *env) apiRaw(d *dispatcher, method, path string, out *[]byte) int {
	e.t.Helper()
	req, err := http.NewRequest(method, d.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	*out, _ = io.ReadAll(res.Body)
	return res.StatusCode
}
