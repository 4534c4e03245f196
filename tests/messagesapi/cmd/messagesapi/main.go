// Command messagesapi runs the stand-in Messages API (package
// tests/messagesapi) on its own, for the demo and for trying the Claude Code
// CLI by hand:
//
//	messagesapi -listen 127.0.0.1:0 -script a.json [-script b.json ...] [-addr-file F]
//
// Each -script is enqueued in order: the first CLI run takes the first. Once
// listening it writes its URL to -addr-file (when given) and to stderr, then
// logs each request it answers on one line of stderr. It stops on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

type scriptFlags []string

func (s *scriptFlags) String() string     { return fmt.Sprint(*s) }
func (s *scriptFlags) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "messagesapi:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, logging to stderr.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("messagesapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free one)")
	addrFile := fs.String("addr-file", "", "write the server's URL to this file once listening")
	var scripts scriptFlags
	fs.Var(&scripts, "script", "a script file (JSON); repeat to enqueue several, in order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (scripts go in -script)", fs.Args())
	}

	var loaded []messagesapi.Script
	for _, f := range scripts {
		s, err := messagesapi.LoadScript(f)
		if err != nil {
			return err
		}
		if s.Name == f {
			s.Name = filepath.Base(f)
		}
		loaded = append(loaded, s)
	}
	var logMu sync.Mutex
	srv := messagesapi.New(messagesapi.OnRequest(func(q messagesapi.Request) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintln(stderr, logLine(q))
	}))
	srv.Enqueue(loaded...)
	if err := srv.Listen(*listen); err != nil {
		return err
	}
	defer srv.Close()
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(srv.URL()+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing -addr-file: %w", err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return fmt.Errorf("writing -addr-file: %w", err)
		}
	}
	fmt.Fprintf(stderr, "messagesapi: listening on %s with %d script(s)\n", srv.URL(), len(loaded))
	<-ctx.Done()
	return nil
}

// logLine is a request's line in the log.
func logLine(q messagesapi.Request) string {
	line := fmt.Sprintf("%s %s %s %s status=%d", q.Time.Format(time.RFC3339Nano), q.Method, q.Path, q.Kind, q.Status)
	if q.Kind == "turn" {
		line += fmt.Sprintf(" conversation=%d script=%q turn=%d attempt=%d stream=%t model=%s", q.Conversation, q.Script, q.Turn, q.Attempt, q.Stream, q.Model)
		if len(q.ToolResults) > 0 {
			line += fmt.Sprintf(" tool_results=%d", len(q.ToolResults))
		}
		if q.Earlier > 0 {
			line += fmt.Sprintf(" resumed earlier_turns=%d", q.Earlier)
		}
		if len(q.Missing) > 0 {
			line += fmt.Sprintf(" missing=%q", q.Missing)
		}
	}
	if q.Stalled {
		line += " stalled"
	}
	if q.Dropped {
		line += " dropped"
	}
	return line
}
