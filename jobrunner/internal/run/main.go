package run

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kilnbuild/kiln/jobrunner/internal/agent"
	"github.com/kilnbuild/kiln/jobrunner/internal/client"
	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/schema"
)

// Exit codes of Main.
const (
	ExitReported    = 0 // the result reached the dispatcher, whatever the build's outcome
	ExitNotReported = 1 // it did not: the termination message holds the outcome
	ExitBadConfig   = 2 // the Job's environment is unusable
)

// Main is the jobrunner program: it reads the environment, runs the build,
// writes the termination message and returns the exit code.
func Main(ctx context.Context, getenv func(string) string, stderr io.Writer) int {
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("component", "jobrunner")
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		log.Error("bad configuration", "err", err)
		writeSummary(log, cfg.TerminationLog, schema.TerminationSummary{Kiln: 1, Error: err.Error()})
		return ExitBadConfig
	}
	log = log.With("build", cfg.BuildID)
	restCfg, err := kubeConfig()
	if err != nil {
		log.Error("no Kubernetes configuration", "err", err)
		writeSummary(log, cfg.TerminationLog, schema.TerminationSummary{Kiln: 1, Error: err.Error()})
		return ExitBadConfig
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		writeSummary(log, cfg.TerminationLog, schema.TerminationSummary{Kiln: 1, Error: err.Error()})
		return ExitBadConfig
	}
	disp, err := client.New(client.Options{BaseURL: cfg.DispatcherURL, BuildID: cfg.BuildID, Token: cfg.Token, Logger: log})
	if err != nil {
		writeSummary(log, cfg.TerminationLog, schema.TerminationSummary{Kiln: 1, Error: err.Error()})
		return ExitBadConfig
	}
	out := New(cfg, disp, kube, podexec.New(kube, restCfg, log), log).Run(ctx)
	writeSummary(log, cfg.TerminationLog, out.Summary())
	if !out.Reported {
		return ExitNotReported
	}
	return ExitReported
}

// kubeConfig is the in-cluster configuration, or $KUBECONFIG outside a cluster.
func kubeConfig() (*rest.Config, error) {
	cfg, err := rest.InClusterConfig()
	if err == nil {
		return cfg, nil
	}
	if kc := os.Getenv("KUBECONFIG"); kc != "" {
		c, kerr := clientcmd.BuildConfigFromFlags("", kc)
		if kerr == nil {
			return c, nil
		}
		return nil, fmt.Errorf("kubeconfig %s: %w", kc, kerr)
	}
	return nil, fmt.Errorf("in-cluster configuration: %w", err)
}

func writeSummary(log *slog.Logger, path string, s schema.TerminationSummary) {
	if path == "" {
		path = DefaultTerminationLog
	}
	if err := os.WriteFile(path, EncodeSummary(s), 0o644); err != nil {
		log.Error("writing the termination message", "path", path, "err", err)
	}
}

// MaxSummaryBytes bounds the encoded TerminationSummary, well under the
// kubelet's 4 KiB termination-message limit.
const MaxSummaryBytes = 3 << 10

// EncodeSummary encodes s as JSON in at most MaxSummaryBytes, shortening
// its error message as needed (escaping can make a message grow sixfold).
func EncodeSummary(s schema.TerminationSummary) []byte {
	// Postgres cannot store NUL, and the watcher settles a build from this
	// summary without the runner protocol's repair: replace it here.
	s.Error = strings.ReplaceAll(s.Error, "\x00", "\uFFFD")
	s.CommitSHA = strings.ReplaceAll(s.CommitSHA, "\x00", "\uFFFD")
	for {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		b := bytes.TrimSpace(buf.Bytes())
		if len(b) <= MaxSummaryBytes || s.Error == "" {
			return b
		}
		s.Error, _ = agent.Truncate(s.Error, len(s.Error)/2)
	}
}
