package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// No Docker engine runs here, so the Dockerfiles are checked as text against
// the rules they promise: multi-stage, a static build, a distroless or
// scratch final stage, a numeric non-root user, no remote ADD, and the
// binary they are named for.
func TestDockerfiles(t *testing.T) {
	for name, pkg := range map[string]string{"Dockerfile.dispatcher": "./dispatcher", "Dockerfile.jobrunner": "./jobrunner"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "docker", name))
			if err != nil {
				t.Fatal(err)
			}
			var froms, users []string
			build := ""
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) == 0 || strings.HasPrefix(f[0], "#") {
					continue
				}
				switch strings.ToUpper(f[0]) {
				case "FROM":
					froms = append(froms, f[1])
				case "USER":
					users = append(users, f[1])
				case "ADD":
					if strings.Contains(line, "://") {
						t.Errorf("remote ADD: %s", line)
					}
				case "RUN":
					if strings.Contains(line, "go build") {
						build = line
					}
				}
			}
			if len(froms) < 2 {
				t.Fatalf("not multi-stage: FROM %v", froms)
			}
			final := froms[len(froms)-1]
			if !strings.Contains(final, "distroless/static") && final != "scratch" {
				t.Errorf("final stage %s is not distroless/static or scratch", final)
			}
			if !strings.Contains(build, "CGO_ENABLED=0") || !strings.HasSuffix(strings.TrimSpace(build), pkg) {
				t.Errorf("build step %q is not a static build of %s", build, pkg)
			}
			if len(users) == 0 || !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(users[len(users)-1]) {
				t.Errorf("final USER %v is not a numeric non-root user", users)
			}
		})
	}
}

// The workspace image (issue 14 item 9) is not a static binary: Debian slim
// with git, ssh and the pinned Claude Code CLI from npm, the version a
// required build argument, and a non-root user kiln (uid 1000) whose HOME
// holds the agent's sessions.
func TestWorkspaceDockerfile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "docker", "Dockerfile.workspace"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var froms, users, workdirs, args []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
		case "USER":
			users = append(users, f[1])
		case "WORKDIR":
			workdirs = append(workdirs, f[1])
		case "ARG":
			args = append(args, f[1])
		case "ADD":
			t.Errorf("ADD in the workspace image: %s", line)
		}
	}
	if len(froms) == 0 || !regexp.MustCompile(`^debian:[a-z]+-slim$`).MatchString(froms[len(froms)-1]) {
		t.Errorf("final stage %v is not a Debian slim image", froms)
	}
	if len(users) == 0 || users[len(users)-1] != "1000:1000" {
		t.Errorf("final USER %v, want 1000:1000", users)
	}
	if len(workdirs) == 0 || workdirs[len(workdirs)-1] != "/workspace" {
		t.Errorf("WORKDIR %v, want /workspace", workdirs)
	}
	if !slices.Contains(args, "CLAUDE_CODE_VERSION") {
		t.Errorf("no ARG CLAUDE_CODE_VERSION (without a default): %v", args)
	}
	install := regexp.MustCompile(`apt-get install(?:[^\n\\]|\\\n)*`).FindString(text)
	for _, pkg := range []string{"git", "ca-certificates", "openssh-client", "nodejs", "npm"} {
		if !regexp.MustCompile(`\s` + regexp.QuoteMeta(pkg) + `(\s|$)`).MatchString(install) {
			t.Errorf("apt-get install lacks %s:\n%s", pkg, install)
		}
	}
	for _, want := range []string{
		`npm install -g --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"`,
		`test -n "$CLAUDE_CODE_VERSION"`,
		"useradd --uid 1000 --gid 1000 --home-dir /home/kiln",
		"HOME=/home/kiln",
		"tests/tools/claude-code.version",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile.workspace lacks %q", want)
		}
	}
	// The pinned version file is what the build argument is fed from.
	v, err := os.ReadFile(filepath.Join("..", "..", "tests", "tools", "claude-code.version"))
	if err != nil || !regexp.MustCompile(`^\d+\.\d+\.\d+\s*$`).Match(v) {
		t.Errorf("tests/tools/claude-code.version: %q, %v", v, err)
	}
}
