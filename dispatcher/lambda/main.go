// Command lambda serves Kiln's build API from AWS Lambda (Function URL or API
// Gateway HTTP API). Build it as `bootstrap` for the provided.al2023 runtime:
// make build-lambda. It reads the dispatcher's KILN_* settings from the
// environment; River workers run in the cluster, never here.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	awslambda "github.com/aws/aws-lambda-go/lambda"

	"github.com/kilnbuild/kiln/dispatcher/internal/config"
	"github.com/kilnbuild/kiln/dispatcher/internal/lambda"
)

func main() {
	cfg, _, err := config.Parse("lambda", nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lambda:", err)
		os.Exit(1)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	// Cold start: connect once per container; invocations reuse the pool.
	h, _, err := lambda.Open(context.Background(), cfg, logger)
	if err != nil {
		logger.Error("starting", "error", err)
		os.Exit(1)
	}
	awslambda.Start(h)
}
