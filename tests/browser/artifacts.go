package browser

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// artifactsEnv names the variable that overrides where screenshots go.
const artifactsEnv = "KILN_TEST_ARTIFACTS"

// modulePath is the module whose root holds tests/artifacts.
const modulePath = "github.com/kilnbuild/kiln"

// artifactsDir returns, creating it, the directory for screenshots:
// $KILN_TEST_ARTIFACTS, else tests/artifacts/browser under the repository
// root (git ignores it).
func artifactsDir() (string, error) {
	dir := os.Getenv(artifactsEnv)
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("finding the repository root: %w", err)
		}
		root, err := moduleRoot(wd)
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "tests", "artifacts", "browser")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating the artifacts directory: %w", err)
	}
	return dir, nil
}

// moduleRoot walks up from dir to the directory whose go.mod declares
// modulePath, passing over nested modules such as tests/kubebox.
func moduleRoot(dir string) (string, error) {
	for d := dir; ; {
		if module, err := moduleOf(filepath.Join(d, "go.mod")); err == nil && module == modulePath {
			return d, nil
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod of %s above %s; set %s", modulePath, dir, artifactsEnv)
		}
		d = parent
	}
}

// moduleOf returns the module path that the go.mod file declares.
func moduleOf(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", gomod, err)
	}
	return "", nil
}

// fileName turns a test name and a screenshot name into a file name that
// holds only letters, digits, '.', '_' and '-': "TestX/sub case" and "after
// login" give "TestX_sub_case-after_login.png".
func fileName(test, name string) string {
	return sanitize(test) + "-" + sanitize(strings.TrimSuffix(name, ".png")) + ".png"
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}
