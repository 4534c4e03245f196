package messagesapi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// versionFile pins the Claude Code CLI version, relative to the repository root.
const versionFile = "tests/tools/claude-code.version"

// CLIEnv is the environment the Claude Code CLI needs to talk to the
// server at url and nothing else, with home as its HOME (it writes its
// settings and sessions there). Append it to a base environment (such as
// os.Environ(), for PATH): with exec.Cmd the later value of a key wins.
func CLIEnv(url, home string) []string {
	return []string{
		"ANTHROPIC_BASE_URL=" + url,
		"ANTHROPIC_API_KEY=sk-ant-stand-in",
		"DISABLE_TELEMETRY=1",
		"DISABLE_ERROR_REPORTING=1",
		"DISABLE_AUTOUPDATER=1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"HOME=" + home,
	}
}

// ClaudeBinary is the path of the pinned Claude Code CLI that `make
// claude-code` installs into <repo>/.tools, the repository being found from
// the working directory upwards (by tests/tools/claude-code.version).
func ClaudeBinary() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, versionFile))
	if err != nil {
		return "", fmt.Errorf("reading the pinned Claude Code version: %w", err)
	}
	version := strings.TrimSpace(string(b))
	if version == "" {
		return "", fmt.Errorf("%s is empty", filepath.Join(root, versionFile))
	}
	bin := filepath.Join(root, ".tools", "claude-code", version, "node_modules", "@anthropic-ai", "claude-code", "bin", "claude.exe")
	fi, err := os.Stat(bin)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("claude-code %s is not installed at %s: run make claude-code", version, bin)
	}
	return bin, nil
}

// RepoRoot is the repository holding the working directory, found upwards
// by tests/tools/claude-code.version.
func RepoRoot() (string, error) { return repoRoot() }

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, versionFile)); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no " + versionFile + " in the working directory or above it: run from inside the repository (then make claude-code)")
		}
		dir = parent
	}
}
