package addons

import (
	"bufio"
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// dialAs connects to redisURL's server and authenticates with its user and
// password; the connection is closed at cleanup.
func dialAs(t *testing.T, ctx context.Context, redisURL string) (*respConn, error) {
	t.Helper()
	u, err := url.Parse(redisURL)
	if err != nil {
		t.Fatalf("REDIS_URL does not parse: %v", err)
	}
	conn, err := dialRESP(ctx, u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	pw, _ := u.User.Password()
	if _, err := conn.do("AUTH", u.User.Username(), pw); err != nil {
		return nil, err
	}
	return conn, nil
}

func adminRedis(t *testing.T, ctx context.Context) *respConn {
	t.Helper()
	conn, err := dialAs(t, ctx, redisServer.AdminURL)
	if err != nil {
		t.Fatalf("admin AUTH: %v", err)
	}
	return conn
}

func provisionRedis(t *testing.T, ctx context.Context, a Addon) (Project, string) {
	t.Helper()
	p := Project{ID: "id-" + projectName(t), Name: projectName(t)}
	t.Cleanup(func() { _ = a.Deprovision(context.Background(), p) })
	c, err := a.Provision(ctx, p)
	if err != nil {
		t.Fatalf("Provision(%s): %v", p.Name, err)
	}
	if n := c.Names(); len(n) != 1 || n[0] != "REDIS_URL" {
		t.Fatalf("Provision set %v; want only REDIS_URL", n)
	}
	return p, c.Env["REDIS_URL"]
}

func isNoPerm(err error) bool {
	var re redisError
	return errors.As(err, &re) && strings.HasPrefix(string(re), "NOPERM")
}

func aclUsers(t *testing.T, ctx context.Context) []string {
	t.Helper()
	v, err := adminRedis(t, ctx).do("ACL", "USERS")
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, u := range v.([]any) {
		users = append(users, u.(string))
	}
	return users
}

func TestRedisUserIsConfinedToItsPrefix(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, logs := newAddon(t, "redis")
	p, redisURL := provisionRedis(t, ctx, a)

	u, _ := url.Parse(redisURL)
	pw, _ := u.User.Password()
	if u.Scheme != "redis" || u.User.Username() != "kiln-"+p.Name || u.Host != redisServer.Addr || u.Path != "/0" || len(pw) < 32 {
		t.Errorf("REDIS_URL = redis://%s:…@%s%s; want redis://kiln-%s:<password>@%s/0", u.User.Username(), u.Host, u.Path, p.Name, redisServer.Addr)
	}
	conn, err := dialAs(t, ctx, redisURL)
	if err != nil {
		t.Fatalf("AUTH with REDIS_URL: %v", err)
	}
	key := p.Name + ":k"
	if v, err := conn.do("SET", key, "v"); err != nil || v != "OK" {
		t.Fatalf("SET %s = %v, %v; want OK", key, v, err)
	}
	if v, err := conn.do("GET", key); err != nil || v != "v" {
		t.Errorf("GET %s = %v, %v; want v", key, v, err)
	}
	for _, cmd := range [][]string{
		{"PING"}, {"SELECT", "0"}, {"EXPIRE", key, "600"}, {"DEL", key}, {"PUBLISH", p.Name + ":events", "x"},
		{"MULTI"}, {"INCR", p.Name + ":n"}, {"EXEC"},
	} {
		if _, err := conn.do(cmd...); err != nil {
			t.Errorf("the project's user may not run %v: %v", cmd, err)
		}
	}
	for _, cmd := range [][]string{
		{"SET", "other:k", "v"}, {"GET", "other:k"}, {"SET", p.Name + "x:k", "v"}, {"RENAME", key, "other:k"},
		{"PUBLISH", "other:events", "x"},
		{"CONFIG", "GET", "maxmemory"}, {"CONFIG", "SET", "maxmemory", "1"}, {"FLUSHALL"}, {"FLUSHDB"},
		{"ACL", "LIST"}, {"ACL", "SETUSER", "kiln-" + p.Name, "+@all"}, {"KEYS", "*"}, {"SCAN", "0"},
		{"RANDOMKEY"}, {"PUBSUB", "CHANNELS"}, {"CLIENT", "LIST"}, {"CLIENT", "KILL", "ID", "1"}, {"SLOWLOG", "GET"}, {"INFO"},
	} {
		if _, err := conn.do(cmd...); !isNoPerm(err) {
			t.Errorf("%v as the project's user = %v; want NOPERM", cmd, err)
		}
	}

	if _, err := dialAs(t, ctx, strings.Replace(redisURL, pw, "wrong", 1)); err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
		t.Errorf("AUTH with a wrong password = %v; want WRONGPASS", err)
	}
	if !strings.Contains(logs.String(), "provisioned redis add-on") {
		t.Errorf("log has no provisioning line: %s", logs)
	}
	assertNoSecret(t, "the log", logs.String(), pw, redisServer.Password)
}

func TestRedisProvisionTwiceResetsThePassword(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, logs := newAddon(t, "redis")
	p, first := provisionRedis(t, ctx, a)
	conn, err := dialAs(t, ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.do("SET", p.Name+":kept", "1"); err != nil {
		t.Fatal(err)
	}
	c, err := a.Provision(ctx, p)
	if err != nil {
		t.Fatalf("provisioning an existing user: %v", err)
	}
	second := c.Env["REDIS_URL"]
	if second == first {
		t.Fatal("the second Provision returned the same password")
	}
	if _, err := dialAs(t, ctx, first); err == nil {
		t.Error("the old password still works after the second Provision")
	}
	conn, err = dialAs(t, ctx, second)
	if err != nil {
		t.Fatalf("the URL of the second Provision does not work: %v", err)
	}
	if v, err := conn.do("GET", p.Name+":kept"); err != nil || v != "1" {
		t.Errorf("the key written before the second Provision = %v, %v; want 1", v, err)
	}
	if _, err := conn.do("SET", "other:k", "v"); !isNoPerm(err) {
		t.Errorf("after the second Provision, SET other:k = %v; want NOPERM", err)
	}
	for _, u := range []string{first, second} {
		pu, _ := url.Parse(u)
		pw, _ := pu.User.Password()
		assertNoSecret(t, "the log", logs.String(), pw)
	}
}

func TestRedisDeprovisionRemovesUserAndKeys(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, logs := newAddon(t, "redis")
	p, redisURL := provisionRedis(t, ctx, a)
	other, otherURL := provisionRedis(t, ctx, a)

	held, err := dialAs(t, ctx, redisURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"SET", p.Name + ":a", "1"}, {"SELECT", "3"}, {"SET", p.Name + ":b", "1"}, {"SELECT", "0"}} {
		if _, err := held.do(cmd...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	oc, err := dialAs(t, ctx, otherURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.do("SET", other.Name+":a", "1"); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		if err := a.Deprovision(ctx, p); err != nil {
			t.Fatalf("Deprovision #%d: %v", i+1, err)
		}
	}
	users := aclUsers(t, ctx)
	for _, u := range users {
		if u == "kiln-"+p.Name {
			t.Errorf("ACL USERS still lists %s after Deprovision: %v", u, users)
		}
	}
	if !strings.Contains(strings.Join(users, " "), "kiln-"+other.Name) {
		t.Errorf("Deprovision of %s removed another project's user: %v", p.Name, users)
	}
	admin := adminRedis(t, ctx)
	for _, c := range []struct {
		db, key string
		want    int64
	}{{"0", p.Name + ":a", 0}, {"3", p.Name + ":b", 0}, {"0", other.Name + ":a", 1}} {
		if _, err := admin.do("SELECT", c.db); err != nil {
			t.Fatal(err)
		}
		if v, err := admin.do("EXISTS", c.key); err != nil || v != c.want {
			t.Errorf("after Deprovision, EXISTS %s in database %s = %v, %v; want %d", c.key, c.db, v, err, c.want)
		}
	}
	if _, err := held.do("PING"); err == nil {
		t.Error("a connection of the deleted user still works")
	}
	if _, err := dialAs(t, ctx, redisURL); err == nil {
		t.Error("the deleted user can still AUTH")
	}
	if !strings.Contains(logs.String(), "removed redis add-on") {
		t.Errorf("log has no removal line: %s", logs)
	}
}

func TestRedisErrorsHideThePasswords(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	logs := &logBuffer{}
	u, _ := url.Parse(redisServer.AdminURL)
	u.User = url.UserPassword("default", "wrong-admin-password")
	a, err := newRedis(u.String(), newTestLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	p := Project{ID: "x", Name: projectName(t)}
	_, err = a.Provision(ctx, p)
	if err == nil || !strings.Contains(err.Error(), "authenticating") {
		t.Fatalf("Provision with a wrong admin password = %v; want an error naming the authentication", err)
	}
	assertNoSecret(t, "the error", err.Error(), "wrong-admin-password", redisServer.Password)
	err = a.Deprovision(ctx, p)
	if err == nil {
		t.Fatal("Deprovision with a wrong admin password succeeded")
	}
	assertNoSecret(t, "the error", err.Error(), "wrong-admin-password")
	assertNoSecret(t, "the log", logs.String(), "wrong-admin-password")

	// A server error that quotes the password is redacted.
	if got := scrub("doing", redisError("ERR bad '>hunter2hunter2'"), "hunter2hunter2").Error(); strings.Contains(got, "hunter2") {
		t.Errorf("scrub kept the secret: %s", got)
	}
}

func TestReadRESP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want any
	}{
		{"+OK\r\n", "OK"},
		{"-NOPERM no\r\n", redisError("NOPERM no")},
		{":42\r\n", int64(42)},
		{"$3\r\nabc\r\n", "abc"},
		{"$0\r\n\r\n", ""},
		{"$-1\r\n", nil},
		{"*2\r\n$1\r\n0\r\n*1\r\n$3\r\nk:1\r\n", []any{"0", []any{"k:1"}}},
	} {
		got, err := readRESP(bufio.NewReader(strings.NewReader(tc.in)))
		if err != nil {
			t.Errorf("readRESP(%q): %v", tc.in, err)
			continue
		}
		if !equalRESP(got, tc.want) {
			t.Errorf("readRESP(%q) = %#v; want %#v", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{"", "OK\r\n", "+OK\n", ":x\r\n", "$5\r\nab\r\n", "$-2\r\n", "$2\r\nabcd", "*1\r\n"} {
		if _, err := readRESP(bufio.NewReader(strings.NewReader(in))); err == nil {
			t.Errorf("readRESP(%q) accepted a malformed reply", in)
		}
	}
}

func equalRESP(a, b any) bool {
	aa, ok1 := a.([]any)
	bb, ok2 := b.([]any)
	if ok1 != ok2 {
		return false
	}
	if !ok1 {
		return a == b
	}
	if len(aa) != len(bb) {
		return false
	}
	for i := range aa {
		if !equalRESP(aa[i], bb[i]) {
			return false
		}
	}
	return true
}

func FuzzReadRESP(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$1\r\n0\r\n*0\r\n", "$-1\r\n", ":1\r\n", "-ERR x\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		_, _ = readRESP(bufio.NewReader(strings.NewReader(in))) // must not panic or hang
	})
}
