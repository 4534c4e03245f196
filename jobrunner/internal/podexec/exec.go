package podexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"
)

// Container names one container of a pod.
type Container struct {
	Namespace string
	Pod       string
	Container string
}

func (c Container) String() string { return c.Namespace + "/" + c.Pod + "/" + c.Container }

// Request is one command to run.
type Request struct {
	// Argv is executed directly by the container runtime (no shell). Required.
	Argv []string
	// Stdin, when set, is streamed to the command; its EOF closes the
	// command's stdin. Exec returns when the command exits, whether or not
	// Stdin has ended; a Read still blocked then keeps a goroutine until it
	// returns. The kubelet closes the command's stdin when the connection
	// goes, and does nothing more: the command runs on.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output as it arrives; nil discards it.
	Stdout, Stderr io.Writer
}

// Executor runs commands in pods.
type Executor struct {
	client kubernetes.Interface
	config *rest.Config
	log    *slog.Logger

	fallbacks atomic.Int64
}

// New returns an Executor using the client's REST client for URLs and
// config for the streaming connections.
func New(client kubernetes.Interface, config *rest.Config, log *slog.Logger) *Executor {
	if log == nil {
		log = slog.Default()
	}
	return &Executor{client: client, config: config, log: log.With("component", "podexec")}
}

// Fallbacks counts the calls that fell back from WebSocket to SPDY.
func (e *Executor) Fallbacks() int64 { return e.fallbacks.Load() }

// Exec runs req in c and returns the command's exit code. A command that
// ran and exited non-zero is not an error; err is for a command that could
// not be started or whose end is unknown (stream broken, ctx ended), and
// then the code is -1.
func (e *Executor) Exec(ctx context.Context, c Container, req Request) (int, error) {
	if len(req.Argv) == 0 {
		return -1, errors.New("exec: empty argv")
	}
	u := e.client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(c.Namespace).Name(c.Pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: c.Container,
			Command:   req.Argv,
			Stdin:     req.Stdin != nil,
			Stdout:    true,
			Stderr:    true,
			TTY:       false,
		}, scheme.ParameterCodec).URL()

	ws, err := remotecommand.NewWebSocketExecutor(e.config, "GET", u.String())
	if err != nil {
		return -1, fmt.Errorf("exec in %s: websocket executor: %w", c, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(e.config, "POST", u)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: spdy executor: %w", c, err)
	}
	// The upgrade-failure predicate must come from k8s.io/streaming: from
	// client-go 0.36 the executors wrap that package's error type, and
	// apimachinery's predicate never matches it.
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		fb := httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		if fb {
			e.fallbacks.Add(1)
			e.log.Info("websocket exec refused; falling back to SPDY", "container", c.String(), "err", err)
		}
		return fb
	})
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", c, err)
	}
	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{
		Stdin:  req.Stdin,
		Stdout: stdout,
		Stderr: stderr,
	})
	if err == nil {
		return 0, nil
	}
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.Exited() && ctx.Err() == nil {
		return ee.ExitStatus(), nil
	}
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return -1, fmt.Errorf("exec %s in %s: %w", req.Argv[0], c, err)
}

// Execer runs a request in a container; *Executor implements it.
type Execer interface {
	Exec(ctx context.Context, c Container, req Request) (int, error)
}

var _ Execer = (*Executor)(nil)

// Runner runs commands in one container; it implements gitstep.Runner.
type Runner struct {
	Exec      Execer
	Container Container
}

// Run implements gitstep.Runner: argv is executed directly, stdin (if not
// nil) is the command's standard input, and the output is collected.
func (r Runner) Run(ctx context.Context, argv []string, stdin []byte) ([]byte, []byte, int, error) {
	var stdout, stderr bytes.Buffer
	req := Request{Argv: argv, Stdout: &stdout, Stderr: &stderr}
	if stdin != nil {
		req.Stdin = bytes.NewReader(stdin)
	}
	code, err := r.Exec.Exec(ctx, r.Container, req)
	return stdout.Bytes(), stderr.Bytes(), code, err
}
