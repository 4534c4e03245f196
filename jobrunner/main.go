// Command jobrunner runs one Kiln build inside its Kubernetes Job: it runs
// the coding agent in the project's pod, commits and pushes with git, and
// reports the BuildResult to the dispatcher. See package run.
package main

import (
	"context"
	"os"

	"github.com/kilnbuild/kiln/jobrunner/internal/run"
)

func main() {
	os.Exit(run.Main(context.Background(), os.Getenv, os.Stderr))
}
