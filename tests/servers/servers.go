// Package servers starts, for tests, the servers Kiln's add-ons provision
// on: a PostgreSQL server with password (SCRAM-SHA-256) authentication and a
// redis-server with a password, each on a free 127.0.0.1 port, in its own
// temporary directory, stopped by pid (and killed with the test process if
// that dies first). It is for tests only: fsync is off and nothing persists.
package servers

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/tests/childproc"
)

// startTimeout bounds how long a server may take to answer; generous for a
// loaded 2-core machine.
const startTimeout = 90 * time.Second

// server is a started child process.
type server struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	dir  string
	log  string // path of its output
}

func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// kill ends the process with sig, then SIGKILL if it has not exited within
// 30s, and waits for it.
func (s *server) kill(sig syscall.Signal) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("pid %d did not stop on %v; killed", s.cmd.Process.Pid, sig)
	}
}

// stop kills the process and removes its directory.
func (s *server) stop(sig syscall.Signal) error {
	err := s.kill(sig)
	if rmErr := os.RemoveAll(s.dir); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

func (s *server) start(cmd *exec.Cmd) error {
	out, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer out.Close() // the child holds its own descriptor
	cmd.Stdout, cmd.Stderr = out, out
	if err := childproc.Start(cmd); err != nil {
		return err
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	return nil
}

func (s *server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Postgres is a running PostgreSQL server whose superuser "postgres" logs
// in with Password over TCP.
type Postgres struct {
	AdminURL string // postgres://postgres:<password>@127.0.0.1:<port>/postgres?sslmode=disable
	Port     int
	Password string
	srv      server
}

// StartPostgres runs initdb with --auth=scram-sha-256 in a new temporary
// directory and starts postgres on a free port. As root it runs both as the
// "postgres" OS user. Call Stop when done.
func StartPostgres() (*Postgres, error) {
	initdb, err := pgBinary("initdb")
	if err != nil {
		return nil, err
	}
	postgres := filepath.Join(filepath.Dir(initdb), "postgres")
	cred, uid, gid, err := postgresUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kiln-addon-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Password: randomHex(16), srv: server{dir: dir, log: filepath.Join(dir, "postgres.log")}}
	fail := func(err error) (*Postgres, error) {
		_ = p.srv.stop(syscall.SIGQUIT)
		return nil, err
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if cred != nil {
		for _, f := range []string{dir, pwfile} {
			if err := os.Chown(f, uid, gid); err != nil {
				return fail(fmt.Errorf("servers: giving %s to the postgres user: %w", f, err))
			}
		}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "--auth=scram-sha-256", "--pwfile="+pwfile,
		"-E", "UTF8", "--no-locale", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("servers: %s: %v\n%s", initdb, err, out))
	}
	_ = os.Remove(pwfile)

	// A free port may be taken before postgres binds it: try again then.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		cmd := exec.Command(postgres, "-D", data, "-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "shared_buffers=16MB", "-c", "max_connections=60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = dir
		if err := p.srv.start(cmd); err != nil {
			return fail(fmt.Errorf("servers: starting %s: %w", postgres, err))
		}
		p.Port = port
		p.AdminURL = (&url.URL{Scheme: "postgres", User: url.UserPassword("postgres", p.Password),
			Host: "127.0.0.1:" + strconv.Itoa(port), Path: "/postgres", RawQuery: "sslmode=disable"}).String()
		err = p.waitReady()
		if err == nil {
			return p, nil
		}
		early := p.srv.exited()
		_ = p.srv.kill(syscall.SIGQUIT)
		if !early || attempt == 3 {
			return fail(err)
		}
	}
}

func (p *Postgres) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, p.AdminURL)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if p.srv.exited() || time.Now().After(deadline) {
			return fmt.Errorf("servers: postgres on port %d did not come up (%v); its log:\n%s", p.Port, err, p.srv.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the server (fast shutdown, by pid) and removes its directory.
func (p *Postgres) Stop() error { return p.srv.stop(syscall.SIGINT) }

// NewPostgres starts a PostgreSQL server for t, stopped when t ends.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	p, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("servers: stopping postgres: %v", err)
		}
	})
	return p
}

// pgBinary finds a PostgreSQL server program: the newest under
// /usr/lib/postgresql/*/bin (Debian, Ubuntu), else on PATH.
func pgBinary(name string) (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	version := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return n
	}
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	if len(matches) > 0 {
		return matches[0], nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("servers: %s not found under /usr/lib/postgresql/*/bin or on PATH: install the PostgreSQL server (apt-get install postgresql, or make postgres)", name)
}

// postgresUser returns the credential to run PostgreSQL programs with: as
// root, the "postgres" OS user (they refuse to run as root); otherwise nil.
func postgresUser() (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, 0, 0, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("servers: running as root needs the postgres OS user, which the postgresql package creates: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

// Redis is a running redis-server whose default user logs in with Password.
type Redis struct {
	AdminURL string // redis://default:<password>@127.0.0.1:<port>
	Addr     string // 127.0.0.1:<port>
	Password string
	srv      server
}

// StartRedis starts redis-server on a free port with a password, no
// persistence, in a new temporary directory. Call Stop when done.
func StartRedis() (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("servers: redis-server not found on PATH: install the redis-server package (apt-get install redis-server, or make postgres)")
	}
	dir, err := os.MkdirTemp("", "kiln-addon-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{Password: randomHex(16), srv: server{dir: dir, log: filepath.Join(dir, "redis.log")}}
	fail := func(err error) (*Redis, error) {
		_ = r.srv.stop(syscall.SIGKILL)
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		r.Addr = "127.0.0.1:" + strconv.Itoa(port)
		r.AdminURL = (&url.URL{Scheme: "redis", User: url.UserPassword("default", r.Password), Host: r.Addr}).String()
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--requirepass", r.Password, "--dir", dir, "--daemonize", "no", "--logfile", "")
		cmd.Dir = dir
		if err := r.srv.start(cmd); err != nil {
			return fail(fmt.Errorf("servers: starting %s: %w", bin, err))
		}
		err = r.waitReady()
		if err == nil {
			return r, nil
		}
		early := r.srv.exited()
		_ = r.srv.kill(syscall.SIGKILL)
		if !early || attempt == 3 {
			return fail(err)
		}
	}
}

func (r *Redis) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		err := r.ping()
		if err == nil {
			return nil
		}
		if r.srv.exited() || time.Now().After(deadline) {
			return fmt.Errorf("servers: redis-server on %s did not come up (%v); its log:\n%s", r.Addr, err, r.srv.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ping authenticates and pings with inline RESP.
func (r *Redis) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n", len(r.Password), r.Password); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	for _, want := range []string{"+OK", "+PONG"} {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(line); got != want {
			return fmt.Errorf("redis answered %q, want %q", got, want)
		}
	}
	return nil
}

// Stop stops the server (SIGTERM, by pid) and removes its directory.
func (r *Redis) Stop() error { return r.srv.stop(syscall.SIGTERM) }

// NewRedis starts a redis-server for t, stopped when t ends.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	r, err := StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("servers: stopping redis-server: %v", err)
		}
	})
	return r
}

// Pid is the postgres server process's id.
func (p *Postgres) Pid() int { return p.srv.cmd.Process.Pid }

// Pid is the redis-server process's id.
func (r *Redis) Pid() int { return r.srv.cmd.Process.Pid }
