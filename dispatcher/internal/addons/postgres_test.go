package addons

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestPgName(t *testing.T) {
	t.Parallel()
	long1, long2 := strings.Repeat("a", 62)+"1", strings.Repeat("a", 62)+"2"
	for _, tc := range []struct{ project, want string }{
		{"a", "kiln_a"},
		{"my-app-2", "kiln_my_app_2"},
		{strings.Repeat("b", 58), "kiln_" + strings.Repeat("b", 58)},
	} {
		if got := pgName(tc.project); got != tc.want {
			t.Errorf("pgName(%q) = %q; want %q", tc.project, got, tc.want)
		}
	}
	n1, n2 := pgName(long1), pgName(long2)
	if len(n1) != 63 || len(n2) != 63 || n1 == n2 {
		t.Errorf("pgName of two 63-character names = %q, %q; want two distinct 63-byte names", n1, n2)
	}
	if pgName(long1) != n1 {
		t.Error("pgName is not deterministic")
	}
}

func TestScramVerifierShape(t *testing.T) {
	t.Parallel()
	v, err := scramVerifier("pw")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$`).MatchString(v) {
		t.Errorf("verifier %q is not in PostgreSQL's SCRAM-SHA-256 form", v)
	}
	if w, _ := scramVerifier("pw"); w == v {
		t.Error("two verifiers of one password are equal: the salt is not random")
	}
}

// pgState is what the admin sees of a project's role and database.
type pgState struct {
	roles, databases                      int
	super, createDB, createRole, canLogin bool
	owner                                 string
}

func readPGState(t *testing.T, ctx context.Context, name string) pgState {
	t.Helper()
	conn, err := pgx.Connect(ctx, pgServer.AdminURL)
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	defer conn.Close(ctx)
	var s pgState
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", name).Scan(&s.roles); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&s.databases); err != nil {
		t.Fatal(err)
	}
	if s.roles == 1 {
		if err := conn.QueryRow(ctx, "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = $1", name).
			Scan(&s.super, &s.createDB, &s.createRole, &s.canLogin); err != nil {
			t.Fatal(err)
		}
	}
	if s.databases == 1 {
		if err := conn.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name).Scan(&s.owner); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// provisionPG provisions a fresh project and deprovisions it at cleanup.
func provisionPG(t *testing.T, ctx context.Context, a Addon) (Project, string) {
	t.Helper()
	p := Project{ID: "id-" + projectName(t), Name: projectName(t)}
	t.Cleanup(func() { _ = a.Deprovision(context.Background(), p) })
	c, err := a.Provision(ctx, p)
	if err != nil {
		t.Fatalf("Provision(%s): %v", p.Name, err)
	}
	if diff := c.Names(); len(diff) != 1 || diff[0] != "DATABASE_URL" {
		t.Fatalf("Provision set %v; want only DATABASE_URL", c.Names())
	}
	return p, c.Env["DATABASE_URL"]
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestPostgresRoleOwnsItsDatabase(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, logs := newAddon(t, "postgres")
	p, dsn := provisionPG(t, ctx, a)
	name := pgName(p.Name)

	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DATABASE_URL does not parse: %v", err)
	}
	pw, _ := u.User.Password()
	if u.Scheme != "postgres" || u.User.Username() != name || u.Path != "/"+name || u.Host != "127.0.0.1:"+itoa(pgServer.Port) || u.Query().Get("sslmode") != "disable" || len(pw) < 32 {
		t.Errorf("DATABASE_URL = postgres://%s:…@%s%s?%s; want postgres://%s:<password>@127.0.0.1:%d/%s?sslmode=disable",
			u.User.Username(), u.Host, u.Path, u.RawQuery, name, pgServer.Port, name)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("the role cannot connect to its own database with DATABASE_URL: %v", err)
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{"CREATE TABLE notes (id int PRIMARY KEY, body text)", "INSERT INTO notes VALUES (1, 'hello')"} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("as the project's role, %s: %v", stmt, err)
		}
	}
	var body string
	if err := conn.QueryRow(ctx, "SELECT body FROM notes WHERE id = 1").Scan(&body); err != nil || body != "hello" {
		t.Errorf("reading back the row = %q, %v; want hello", body, err)
	}
	for _, stmt := range []string{"CREATE DATABASE kiln_escape", "CREATE ROLE kiln_escape", "ALTER ROLE " + name + " SUPERUSER"} {
		if _, err := conn.Exec(ctx, stmt); err == nil {
			t.Errorf("the project's role may run %q", stmt)
		}
	}

	s := readPGState(t, ctx, name)
	if want := (pgState{roles: 1, databases: 1, canLogin: true, owner: name}); s != want {
		t.Errorf("role and database = %+v; want %+v (a login role without SUPERUSER/CREATEDB/CREATEROLE owning its database)", s, want)
	}
	if !strings.Contains(logs.String(), "provisioned postgres add-on") {
		t.Errorf("log has no provisioning line: %s", logs)
	}
	assertNoSecret(t, "the log", logs.String(), pw, pgServer.Password)
}

func TestPostgresRoleCannotReachAnotherProject(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, _ := newAddon(t, "postgres")
	_, dsnA := provisionPG(t, ctx, a)
	pB, _ := provisionPG(t, ctx, a)

	u, _ := url.Parse(dsnA)
	u.Path = "/" + pgName(pB.Name)
	if c, err := pgx.Connect(ctx, u.String()); err == nil {
		c.Close(ctx)
		t.Fatal("project A's role connected to project B's database")
	} else if sqlState(err) != "42501" {
		t.Errorf("connecting to another project's database failed with %v; want insufficient_privilege (42501)", err)
	}

	u, _ = url.Parse(dsnA)
	u.User = url.UserPassword(u.User.Username(), "wrong-password")
	if c, err := pgx.Connect(ctx, u.String()); err == nil {
		c.Close(ctx)
		t.Fatal("the role connected with a wrong password")
	} else if sqlState(err) != "28P01" {
		t.Errorf("a wrong password failed with %v; want invalid_password (28P01)", err)
	}
}

func TestPostgresProvisionTwiceResetsThePassword(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, logs := newAddon(t, "postgres")
	p, first := provisionPG(t, ctx, a)
	conn, err := pgx.Connect(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (x int)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	c, err := a.Provision(ctx, p)
	if err != nil {
		t.Fatalf("provisioning an existing add-on: %v", err)
	}
	second := c.Env["DATABASE_URL"]
	if second == first {
		t.Fatal("the second Provision returned the same password")
	}
	conn, err = pgx.Connect(ctx, second)
	if err != nil {
		t.Fatalf("the URL of the second Provision does not work: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO kept VALUES (1)"); err != nil {
		t.Errorf("the table created before the second Provision is gone or not owned: %v", err)
	}
	if c, err := pgx.Connect(ctx, first); err == nil {
		c.Close(ctx)
		t.Error("the old password still works after the second Provision")
	}
	if s := readPGState(t, ctx, pgName(p.Name)); s.roles != 1 || s.databases != 1 {
		t.Errorf("after two Provisions: %+v; want one role and one database", s)
	}
	for _, dsn := range []string{first, second} {
		u, _ := url.Parse(dsn)
		pw, _ := u.User.Password()
		assertNoSecret(t, "the log", logs.String(), pw)
	}
}

func TestPostgresDeprovisionTwiceLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, logs := newAddon(t, "postgres")
	p, dsn := provisionPG(t, ctx, a)
	held, err := pgx.Connect(ctx, dsn) // an open session must not block the drop
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())

	for i := range 2 {
		if err := a.Deprovision(ctx, p); err != nil {
			t.Fatalf("Deprovision #%d: %v", i+1, err)
		}
	}
	if s := readPGState(t, ctx, pgName(p.Name)); s.roles != 0 || s.databases != 0 {
		t.Errorf("after Deprovision: %d roles and %d databases named %s; want none", s.roles, s.databases, pgName(p.Name))
	}
	if err := held.Ping(ctx); err == nil {
		t.Error("a session in the dropped database is still alive")
	}
	if !strings.Contains(logs.String(), "removed postgres add-on") {
		t.Errorf("log has no removal line: %s", logs)
	}
}

func TestPostgresErrorsHideThePasswords(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// An admin role that may log in but not create roles: provisioning
	// fails at its first statement.
	weak := "weak_" + strings.ReplaceAll(projectName(t), "-", "_")
	weakPW := "weakpassword0123456789"
	admin, err := pgx.Connect(ctx, pgServer.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE ROLE "+weak+" LOGIN PASSWORD '"+weakPW+"'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE "+weak); admin.Close(context.Background()) })

	logs := &logBuffer{}
	u, _ := url.Parse(pgServer.AdminURL)
	u.User = url.UserPassword(weak, weakPW)
	a, err := newPostgres(u.String(), newTestLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	p := Project{ID: "x", Name: projectName(t)}
	_, err = a.Provision(ctx, p)
	if err == nil || !strings.Contains(err.Error(), "creating the role") || !strings.Contains(err.Error(), "42501") {
		t.Fatalf("Provision with an admin that may not create roles = %v; want an error naming the statement and permission denied", err)
	}
	assertNoSecret(t, "the error", err.Error(), weakPW)

	u.User = url.UserPassword("postgres", "wrong-admin-password")
	a, err = newPostgres(u.String(), newTestLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Provision(ctx, p)
	if err == nil || !strings.Contains(err.Error(), "connecting to the admin server") {
		t.Fatalf("Provision with a wrong admin password = %v; want an error naming the connection", err)
	}
	assertNoSecret(t, "the error", err.Error(), "wrong-admin-password")
	if err := a.Deprovision(ctx, p); err == nil || strings.Contains(err.Error(), "wrong-admin-password") {
		t.Errorf("Deprovision with a wrong admin password = %v; want an error without the password", err)
	}
	assertNoSecret(t, "the log", logs.String(), weakPW, "wrong-admin-password")
}
