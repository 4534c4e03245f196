package lambda

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/config"
	"github.com/kilnbuild/kiln/jobtemplates"
)

// Open assembles an insert-only dispatcher (River client without workers, no
// cluster) from cfg and returns its Handler and the App. Call it once per
// container, before lambda.Start: the pool then lives across invocations.
// cfg.Workers and the cluster settings are ignored.
func Open(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*Handler, *app.App, error) {
	start := time.Now()
	pool, err := app.OpenPool(ctx, cfg.DatabaseURL, cfg.DBSchema)
	if err != nil {
		return nil, nil, err
	}
	templates := jobtemplates.Embedded()
	if cfg.TemplatesDir != "" {
		c, err := jobtemplates.LoadDir(cfg.TemplatesDir)
		if err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("templates-dir %s: %w", cfg.TemplatesDir, err)
		}
		templates = templates.Merge(c)
	}
	a, err := app.New(app.Options{Pool: pool, Schema: cfg.DBSchema, Workers: 0, Logger: logger,
		AuthCacheTTL: cfg.AuthCacheTTL, AuthMissTTL: cfg.AuthMissTTL, Templates: templates,
		CallbackAllowlist: cfg.CallbackAllowlist, CallbackMaxAge: cfg.CallbackMaxAge, CallbackTimeout: cfg.CallbackTimeout,
		EventBuffer: cfg.EventBuffer, EventHeartbeat: cfg.EventHeartbeat,
		PublicURL: cfg.PublicURL, ConsoleSessionTTL: cfg.ConsoleSessionTTL})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	if err := a.Start(ctx); err != nil {
		pool.Close()
		return nil, nil, err
	}
	logger.Info("lambda ready", "init_ms", time.Since(start).Milliseconds(), "templates", templates.Names())
	return &Handler{HTTP: a.Handler, Logger: logger.With("component", "lambda")}, a, nil
}
