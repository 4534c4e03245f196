package addons

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func init() {
	register("postgres", []string{"DATABASE_URL"}, func(u string, l *slog.Logger) (Addon, error) { return newPostgres(u, l) })
}

// Postgres provisions, on a PostgreSQL-protocol server, a database and a
// login role per project: the role owns the database, has no SUPERUSER,
// CREATEDB or CREATEROLE, and is the only non-admin role that may connect
// to it. The workspace gets DATABASE_URL.
//
// Names are deterministic: role and database are both "kiln_" + the project
// name with '-' as '_' (long names are cut and end in a hash), always quoted.
// The password is random and reaches the server only as a SCRAM-SHA-256
// verifier, so it is in no statement text or server log.
//
// The admin role must be a superuser, or on PostgreSQL 16+ a role with
// CREATEROLE and CREATEDB.
//
// The SQL is what PostgreSQL and CockroachDB both accept — reads of
// pg_roles and pg_database, CREATE ROLE … WITH LOGIN NOCREATEDB NOCREATEROLE
// PASSWORD '<SCRAM verifier>', ALTER ROLE … WITH (same), CREATE DATABASE …
// OWNER …, ALTER DATABASE … OWNER TO …, REVOKE CONNECT ON DATABASE … FROM
// PUBLIC, GRANT CONNECT ON DATABASE … TO …, DROP ROLE IF EXISTS — except:
//   - DROP DATABASE IF EXISTS … WITH (FORCE), which terminates the
//     database's sessions first: PostgreSQL 13+ only; on CockroachDB
//     (detected by version()) it is DROP DATABASE IF EXISTS … CASCADE;
//   - ALTER ROLE … NOSUPERUSER, sent only when the role was found to be a
//     superuser (someone made it one): PostgreSQL only.
//
// CockroachDB is untested here (it cannot run on the test machines) and
// needs v22.2+ for pre-hashed SCRAM passwords.
type Postgres struct {
	cfg       *pgx.ConnConfig
	server    string // host:port of the admin URL, named in errors and DATABASE_URL
	query     string // sslmode carried from the admin URL into DATABASE_URL
	adminPass string // redacted from errors
	log       *slog.Logger
}

// NewPostgres returns the postgres add-on on the server adminURL names
// (postgres://user:password@host:port/database?sslmode=…). It checks the URL
// but does not connect.
func NewPostgres(adminURL string) (*Postgres, error) { return newPostgres(adminURL, nil) }

func newPostgres(adminURL string, l *slog.Logger) (*Postgres, error) {
	u, err := parseAdminURL("postgres", adminURL, "postgres", "postgresql")
	if err != nil {
		return nil, err
	}
	pw, _ := u.User.Password()
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return nil, scrub("postgres add-on: admin URL", err, pw)
	}
	var q string
	if m := u.Query().Get("sslmode"); m != "" {
		q = url.Values{"sslmode": {m}}.Encode()
	}
	return &Postgres{cfg: cfg, server: u.Host, query: q, adminPass: pw, log: logger(l, "postgres")}, nil
}

// Type implements Addon.
func (*Postgres) Type() string { return "postgres" }

// pgName is the role and database name of a project: a valid PostgreSQL
// identifier of at most 63 bytes, distinct for distinct DNS labels.
func pgName(project string) string {
	n := "kiln_" + strings.ReplaceAll(project, "-", "_")
	if len(n) > 63 {
		sum := sha256.Sum256([]byte(project))
		n = n[:54] + "_" + hex.EncodeToString(sum[:4])
	}
	return n
}

// Provision implements Addon: it creates or converges the role (with a new
// password) and the database, and returns DATABASE_URL.
func (pg *Postgres) Provision(ctx context.Context, p Project) (Credentials, error) {
	if err := p.validate(); err != nil {
		return Credentials{}, err
	}
	name := pgName(p.Name)
	pw, err := newPassword()
	if err != nil {
		return Credentials{}, err
	}
	verifier, err := scramVerifier(pw)
	if err != nil {
		return Credentials{}, err
	}
	conn, err := pg.connect(ctx)
	if err != nil {
		return Credentials{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	fail := func(doing string, err error) (Credentials, error) {
		return Credentials{}, scrub(fmt.Sprintf("postgres add-on %s on %s: %s", name, pg.server, doing), err, pw, pg.adminPass)
	}

	id := pgx.Identifier{name}.Sanitize()
	var super bool
	roleExists := true
	switch err := conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", name).Scan(&super); {
	case errors.Is(err, pgx.ErrNoRows):
		roleExists = false
	case err != nil:
		return fail("looking up the role", err)
	}
	opts := " WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD " + quoteLiteral(verifier)
	if !roleExists {
		if _, err := conn.Exec(ctx, "CREATE ROLE "+id+opts); err != nil {
			if !isCode(err, "42710") { // duplicate_object: created meanwhile
				return fail("creating the role", err)
			}
			roleExists = true
		}
	}
	if roleExists {
		if _, err := conn.Exec(ctx, "ALTER ROLE "+id+opts); err != nil {
			return fail("altering the role", err)
		}
	}
	if super {
		if _, err := conn.Exec(ctx, "ALTER ROLE "+id+" NOSUPERUSER"); err != nil {
			return fail("removing SUPERUSER from the role", err)
		}
	}

	var one int
	dbExists := true
	switch err := conn.QueryRow(ctx, "SELECT 1 FROM pg_database WHERE datname = $1", name).Scan(&one); {
	case errors.Is(err, pgx.ErrNoRows):
		dbExists = false
	case err != nil:
		return fail("looking up the database", err)
	}
	if !dbExists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+id+" OWNER "+id); err != nil {
			if !isCode(err, "42P04") { // duplicate_database: created meanwhile
				return fail("creating the database", err)
			}
			dbExists = true
		}
	}
	if dbExists {
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+id+" OWNER TO "+id); err != nil {
			return fail("setting the database owner", err)
		}
	}
	// PostgreSQL grants CONNECT on every database to PUBLIC; take it back so
	// that no other project's role can connect.
	if _, err := conn.Exec(ctx, "REVOKE CONNECT ON DATABASE "+id+" FROM PUBLIC"); err != nil {
		return fail("revoking CONNECT from PUBLIC", err)
	}
	if _, err := conn.Exec(ctx, "GRANT CONNECT ON DATABASE "+id+" TO "+id); err != nil {
		return fail("granting CONNECT to the role", err)
	}

	dsn := url.URL{Scheme: "postgres", User: url.UserPassword(name, pw), Host: pg.server, Path: "/" + name, RawQuery: pg.query}
	pg.log.InfoContext(ctx, "provisioned postgres add-on", "project", p.ID, "role", name, "database", name, "server", pg.server)
	return Credentials{Env: map[string]string{"DATABASE_URL": dsn.String()}}, nil
}

// Deprovision implements Addon: it drops the database (ending its sessions)
// and then the role; either may be absent.
func (pg *Postgres) Deprovision(ctx context.Context, p Project) error {
	if err := p.validate(); err != nil {
		return err
	}
	name := pgName(p.Name)
	conn, err := pg.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	fail := func(doing string, err error) error {
		return scrub(fmt.Sprintf("postgres add-on %s on %s: %s", name, pg.server, doing), err, pg.adminPass)
	}
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		return fail("reading the server version", err)
	}
	id := pgx.Identifier{name}.Sanitize()
	drop := "DROP DATABASE IF EXISTS " + id + " WITH (FORCE)" // PostgreSQL 13+
	if strings.HasPrefix(version, "CockroachDB") {
		drop = "DROP DATABASE IF EXISTS " + id + " CASCADE"
	}
	if _, err := conn.Exec(ctx, drop); err != nil {
		return fail("dropping the database", err)
	}
	if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+id); err != nil {
		return fail("dropping the role", err)
	}
	pg.log.InfoContext(ctx, "removed postgres add-on", "project", p.ID, "role", name, "database", name, "server", pg.server)
	return nil
}

func (pg *Postgres) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, pg.cfg.Copy())
	if err != nil {
		return nil, scrub("postgres add-on: connecting to the admin server "+pg.server, err, pg.adminPass)
	}
	return conn, nil
}

func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// scramVerifier returns the SCRAM-SHA-256 verifier of password (RFC 5802,
// RFC 7677) in the form PostgreSQL stores and accepts in place of a password:
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>. password must
// be ASCII without control characters, which SASLprep leaves unchanged.
func scramVerifier(password string) (string, error) {
	const iterations = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating a salt: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("deriving the SCRAM key: %w", err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key"))), nil
}

// parseAdminURL parses an add-on server's admin URL without ever putting
// the URL (which holds a password) into an error.
func parseAdminURL(typ, raw string, schemes ...string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil { // its text may quote a piece of the password
		return nil, fmt.Errorf("%s add-on: admin URL does not parse as a URL (check that the password is %%-escaped)", typ)
	}
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		return nil, fmt.Errorf("%s add-on: admin URL must start with %s://", typ, schemes[0])
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s add-on: admin URL has no host", typ)
	}
	return u, nil
}
