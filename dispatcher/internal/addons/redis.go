package addons

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
)

func init() {
	register("redis", []string{"REDIS_URL"}, func(u string, l *slog.Logger) (Addon, error) { return newRedis(u, l) })
}

// Redis provisions, on a Redis 6.2+ server, an ACL user per project named
// "kiln-<project name>" that may touch only keys and channels matching
// "<project name>:*" and run no admin or dangerous command. The workspace
// gets REDIS_URL. The password reaches the server only as its SHA-256 hash.
//
// The user's rules, applied atomically by one ACL SETUSER:
//
//	reset on #<sha256> ~<name>:* resetchannels &<name>:*
//	-@all +@read +@write +@keyspace +@connection +@transaction +@pubsub
//	-@admin -@dangerous -scan -randomkey -pubsub
//
// SCAN, RANDOMKEY and PUBSUB (introspection) are not checked against key
// patterns by Redis, so they are removed: they would show other projects'
// key and channel names. Deprovision deletes the user, which disconnects its
// clients, and then the keys "<name>:*" in every logical database.
type Redis struct {
	addr      string // host:port
	user      string // admin user; "" means the default user (AUTH <password>)
	adminPass string
	log       *slog.Logger
}

// NewRedis returns the redis add-on on the server adminURL names
// (redis://user:password@host:port, the user may be empty). It checks the
// URL but does not connect. TLS (rediss://) is not supported yet.
func NewRedis(adminURL string) (*Redis, error) { return newRedis(adminURL, nil) }

func newRedis(adminURL string, l *slog.Logger) (*Redis, error) {
	u, err := parseAdminURL("redis", adminURL, "redis")
	if err != nil {
		return nil, err
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "6379")
	}
	r := &Redis{addr: addr, log: logger(l, "redis")}
	if u.User != nil {
		r.user = u.User.Username()
		r.adminPass, _ = u.User.Password()
	}
	return r, nil
}

// Type implements Addon.
func (*Redis) Type() string { return "redis" }

func redisUser(project string) string { return "kiln-" + project }

// Provision implements Addon: it creates or resets the project's ACL user
// (with a new password) and returns REDIS_URL.
func (r *Redis) Provision(ctx context.Context, p Project) (Credentials, error) {
	if err := p.validate(); err != nil {
		return Credentials{}, err
	}
	user := redisUser(p.Name)
	pw, err := newPassword()
	if err != nil {
		return Credentials{}, err
	}
	conn, err := r.connect(ctx)
	if err != nil {
		return Credentials{}, err
	}
	defer conn.Close()
	sum := sha256.Sum256([]byte(pw))
	if _, err := conn.do("ACL", "SETUSER", user, "reset", "on", "#"+hex.EncodeToString(sum[:]),
		"~"+p.Name+":*", "resetchannels", "&"+p.Name+":*",
		"-@all", "+@read", "+@write", "+@keyspace", "+@connection", "+@transaction", "+@pubsub",
		"-@admin", "-@dangerous", "-scan", "-randomkey", "-pubsub"); err != nil {
		return Credentials{}, scrub(fmt.Sprintf("redis add-on %s on %s: ACL SETUSER", user, r.addr), err, pw, r.adminPass)
	}
	u := url.URL{Scheme: "redis", User: url.UserPassword(user, pw), Host: r.addr, Path: "/0"}
	r.log.InfoContext(ctx, "provisioned redis add-on", "project", p.ID, "user", user, "server", r.addr)
	return Credentials{Env: map[string]string{"REDIS_URL": u.String()}}, nil
}

// Deprovision implements Addon: it deletes the project's ACL user and its
// keys; both may be absent.
func (r *Redis) Deprovision(ctx context.Context, p Project) error {
	if err := p.validate(); err != nil {
		return err
	}
	user := redisUser(p.Name)
	conn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	fail := func(doing string, err error) error {
		return scrub(fmt.Sprintf("redis add-on %s on %s: %s", user, r.addr, doing), err, r.adminPass)
	}
	if _, err := conn.do("ACL", "DELUSER", user); err != nil {
		return fail("ACL DELUSER", err)
	}
	dbs := 1
	if v, err := conn.do("CONFIG", "GET", "databases"); err == nil {
		if a, ok := v.([]any); ok && len(a) == 2 {
			if s, ok := a[1].(string); ok {
				if n, err := strconv.Atoi(s); err == nil && n > 0 {
					dbs = n
				}
			}
		}
	} // else CONFIG may be renamed or disabled on a managed server: clean database 0 only.
	deleted := 0
	for db := range dbs {
		if dbs > 1 {
			if _, err := conn.do("SELECT", strconv.Itoa(db)); err != nil {
				return fail("SELECT "+strconv.Itoa(db), err)
			}
		}
		n, err := deleteKeys(conn, p.Name+":*")
		deleted += n
		if err != nil {
			return fail(fmt.Sprintf("deleting keys in database %d", db), err)
		}
	}
	r.log.InfoContext(ctx, "removed redis add-on", "project", p.ID, "user", user, "server", r.addr, "keys_deleted", deleted)
	return nil
}

// deleteKeys unlinks every key matching pattern in the selected database.
func deleteKeys(conn *respConn, pattern string) (int, error) {
	cursor, deleted := "0", 0
	for {
		v, err := conn.do("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
		if err != nil {
			return deleted, err
		}
		a, ok := v.([]any)
		if !ok || len(a) != 2 {
			return deleted, fmt.Errorf("%w: SCAN reply is not [cursor, keys]", errProtocol)
		}
		next, _ := a[0].(string)
		keys, _ := a[1].([]any)
		if len(keys) > 0 {
			args := []string{"UNLINK"}
			for _, k := range keys {
				if s, ok := k.(string); ok {
					args = append(args, s)
				}
			}
			if _, err := conn.do(args...); err != nil {
				return deleted, err
			}
			deleted += len(args) - 1
		}
		if next == "0" || next == "" {
			return deleted, nil
		}
		cursor = next
	}
}

func (r *Redis) connect(ctx context.Context) (*respConn, error) {
	conn, err := dialRESP(ctx, r.addr)
	if err != nil {
		return nil, scrub("redis add-on: connecting to "+r.addr, err, r.adminPass)
	}
	if r.adminPass != "" {
		args := []string{"AUTH", r.adminPass}
		if r.user != "" {
			args = []string{"AUTH", r.user, r.adminPass}
		}
		if _, err := conn.do(args...); err != nil {
			conn.Close()
			return nil, scrub("redis add-on: authenticating to "+r.addr, err, r.adminPass)
		}
	}
	return conn, nil
}
