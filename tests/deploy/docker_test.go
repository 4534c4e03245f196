package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
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
