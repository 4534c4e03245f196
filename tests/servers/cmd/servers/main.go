// Command servers starts the add-on servers of package tests/servers on
// their own, for the local stack (make dev-up): a PostgreSQL server with
// password authentication and a redis-server with a password, each on a
// free 127.0.0.1 port in a temporary directory.
//
//	servers [-env-file F]
//
// Once both answer it writes, to -env-file (mode 0600, when given) and to
// stdout, shell lines
//
//	KILN_ADDON_POSTGRES_URL=postgres://postgres:<password>@127.0.0.1:<port>/postgres?sslmode=disable
//	KILN_ADDON_REDIS_URL=redis://default:<password>@127.0.0.1:<port>
//	POSTGRES_PID=<pid>
//	REDIS_PID=<pid>
//
// and stays up. On SIGINT or SIGTERM it stops both and removes their
// directories; if it is killed, the servers die with it (parent-death
// signal). The URLs hold the admin passwords: keep stdout out of logs. Not
// for production: fsync is off and nothing persists.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/kilnbuild/kiln/tests/servers"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "servers:", err)
		os.Exit(1)
	}
}

// run starts both servers, reports them, and stops them when ctx ends.
func run(ctx context.Context, args []string, stdout io.Writer) (err error) {
	envFile := ""
	switch {
	case len(args) == 0:
	case len(args) == 2 && (args[0] == "-env-file" || args[0] == "--env-file"):
		envFile = args[1]
	default:
		return fmt.Errorf("usage: servers [-env-file F] (got %q)", args)
	}
	pg, err := servers.StartPostgres()
	if err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	defer func() {
		if stopErr := pg.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stopping postgres: %w", stopErr))
		}
	}()
	rd, err := servers.StartRedis()
	if err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	defer func() {
		if stopErr := rd.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stopping redis-server: %w", stopErr))
		}
	}()
	lines := fmt.Sprintf("KILN_ADDON_POSTGRES_URL=%s\nKILN_ADDON_REDIS_URL=%s\nPOSTGRES_PID=%d\nREDIS_PID=%d\n",
		pg.AdminURL, rd.AdminURL, pg.Pid(), rd.Pid())
	if envFile != "" {
		tmp := envFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(lines), 0o600); err != nil {
			return fmt.Errorf("writing -env-file: %w", err)
		}
		if err := os.Rename(tmp, envFile); err != nil {
			return fmt.Errorf("writing -env-file: %w", err)
		}
	}
	if _, err := io.WriteString(stdout, lines); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
