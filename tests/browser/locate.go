package browser

import (
	"errors"
	"fmt"
)

// chromiumEnv names the variable that points New at a Chromium binary (a path,
// or a name looked up on PATH), overriding the search.
const chromiumEnv = "KILN_CHROMIUM"

// chromiumNames are the executables New looks for on PATH, in order: Debian's
// chromium package installs the first, some other distributions the second.
var chromiumNames = []string{"chromium", "chromium-browser"}

// errNoChromium reports that no Chromium was found where New looks by default.
// It is the one failure New may turn into a skip.
var errNoChromium = errors.New("no chromium or chromium-browser on PATH; run `make chromium` (or set " + chromiumEnv + ")")

// locate finds the Chromium to run: the one $KILN_CHROMIUM names, else the
// first of chromiumNames on PATH. A $KILN_CHROMIUM that does not resolve is a
// misconfiguration, reported as an error other than errNoChromium.
func locate(getenv func(string) string, lookPath func(string) (string, error)) (string, error) {
	if name := getenv(chromiumEnv); name != "" {
		path, err := lookPath(name)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", chromiumEnv, name, err)
		}
		return path, nil
	}
	for _, name := range chromiumNames {
		if path, err := lookPath(name); err == nil {
			return path, nil
		}
	}
	return "", errNoChromium
}

// onCI reports whether the CI environment variable says this is a CI run, as
// CI systems set it ("true", "1", ...). "false" and "0" count as unset.
func onCI(getenv func(string) string) bool {
	switch getenv("CI") {
	case "", "0", "false", "FALSE", "False":
		return false
	}
	return true
}
