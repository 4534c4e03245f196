// Command gitserver serves a directory of bare git repositories over smart
// HTTP to one account, as a private repository host would (package
// tests/gitserver's Handler), for the local stack (make dev-up) and the demo:
//
//	gitserver -root DIR -user kiln -token-file F [-listen 127.0.0.1:0] [-addr-file F]
//
// Every repository under -root (DIR/acme-web.git is <URL>/acme-web.git)
// accepts clone, fetch and push with the user name and the token read from
// -token-file; every other request is answered 401. The token is read from
// a file so it is never in argv. Once listening it writes its URL to
// -addr-file (when given) and to stderr, then logs one line per request
// (never the token). It stops on SIGINT or SIGTERM. It is a development
// tool: no TLS, no SSH, one account for every repository.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kilnbuild/kiln/tests/gitserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gitserver:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, logging to stderr.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gitserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "directory of bare repositories to serve (required)")
	user := fs.String("user", "kiln", "the Basic-auth user name accepted")
	tokenFile := fs.String("token-file", "", "file holding the token accepted as the password (required)")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free one)")
	addrFile := fs.String("addr-file", "", "write the server's URL to this file once listening")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *root == "" || *tokenFile == "" {
		return errors.New("-root and -token-file are required")
	}
	b, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("reading -token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	absRoot, err := filepath.Abs(*root)
	if err != nil {
		return fmt.Errorf("-root: %w", err)
	}
	if fi, err := os.Stat(absRoot); err != nil || !fi.IsDir() {
		return fmt.Errorf("-root %s: not a directory", absRoot)
	}
	home, err := os.MkdirTemp("", "kiln-gitserver-home-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)

	h, err := gitserver.NewHandler(gitserver.HandlerOptions{
		Root: absRoot, Home: home, Username: *user, Token: token, ReceivePack: true, Log: stderr,
		OnRequest: func(r gitserver.Request) {
			fmt.Fprintf(stderr, "%s %s %s service=%s user=%q authenticated=%t\n",
				time.Now().UTC().Format(time.RFC3339Nano), r.Method, r.Path, r.Service, r.User, r.Authenticated)
		},
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	url := "http://" + l.Addr().String()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(url+"\n"), 0o644); err != nil {
			_ = srv.Close()
			return fmt.Errorf("writing -addr-file: %w", err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			_ = srv.Close()
			return fmt.Errorf("writing -addr-file: %w", err)
		}
	}
	fmt.Fprintf(stderr, "gitserver: serving %s on %s for user %q\n", absRoot, url, *user)
	select {
	case err := <-done:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	<-done
	return nil
}
