package gitstep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
)

// Runner runs one command to completion. A command that ran and exited
// non-zero is not an error: err is for commands that could not run (or whose
// outcome is unknown, such as a broken exec stream).
type Runner interface {
	Run(ctx context.Context, argv []string, stdin []byte) (stdout, stderr []byte, exitCode int, err error)
}

// LocalRunner runs commands as processes on this machine.
type LocalRunner struct {
	// Dir is the working directory; empty means the current one.
	Dir string
	// Env is the environment, as for exec.Cmd.Env; nil means this process's.
	Env []string
}

// Run implements Runner.
func (r LocalRunner) Run(ctx context.Context, argv []string, stdin []byte) ([]byte, []byte, int, error) {
	if len(argv) == 0 {
		return nil, nil, -1, errors.New("running a command: empty argv")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = r.Dir
	cmd.Env = r.Env
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), stderr.Bytes(), 0, nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0 && ctx.Err() == nil:
		return stdout.Bytes(), stderr.Bytes(), exitErr.ExitCode(), nil
	default:
		return stdout.Bytes(), stderr.Bytes(), -1, fmt.Errorf("running %s: %w", argv[0], errors.Join(err, ctx.Err()))
	}
}
