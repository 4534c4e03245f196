package servers

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresNeedsThePassword checks the server the helper starts: the
// admin URL works, a wrong password is refused, and Stop ends the process
// and removes its directory.
func TestPostgresNeedsThePassword(t *testing.T) {
	t.Parallel()
	p, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.AdminURL)
	if err != nil {
		t.Fatalf("connecting with the admin URL: %v", err)
	}
	var method string
	if err := conn.QueryRow(ctx, "SHOW password_encryption").Scan(&method); err != nil || method != "scram-sha-256" {
		t.Errorf("password_encryption = %q, %v; want scram-sha-256", method, err)
	}
	conn.Close(ctx)
	cfg, _ := pgx.ParseConfig(p.AdminURL)
	cfg.Password = "wrong"
	if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		c.Close(ctx)
		t.Fatal("a wrong password was accepted: the server does not require password authentication")
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(p.srv.dir); !os.IsNotExist(err) {
		t.Errorf("Stop left %s behind (%v)", p.srv.dir, err)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p.Port), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still answers after Stop", p.Port)
	}
}

// TestRedisNeedsThePassword checks that the redis-server requires its
// password and that Stop ends it.
func TestRedisNeedsThePassword(t *testing.T) {
	t.Parallel()
	r, err := StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	good := *r
	if err := good.ping(); err != nil {
		t.Fatalf("AUTH with the password: %v", err)
	}
	bad := Redis{Addr: r.Addr, Password: "wrong"}
	if err := bad.ping(); err == nil {
		t.Fatal("AUTH with a wrong password succeeded")
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", r.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still answers after Stop", r.Addr)
	}
}
