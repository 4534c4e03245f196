package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/config"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

const tokenUsage = `usage: dispatcher token create --name N (--admin | --project P ...)
       dispatcher token list [--json]
       dispatcher token revoke <id|name>`

// tokenAdmin runs token list and token revoke.
func tokenAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "list":
		return tokenList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return tokenRevoke(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown token command %q\n%s", args[0], tokenUsage)
}

// tokenFlags are the database flags of a token command (defaults from the
// environment, as for serve).
type tokenFlags struct {
	fs              *flag.FlagSet
	dbURL, dbSchema *string
}

func newTokenFlags(name string, stderr io.Writer) (*tokenFlags, error) {
	cfg, _, err := config.Parse(name, nil, nil)
	if err != nil {
		return nil, err
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &tokenFlags{fs: fs,
		dbURL:    fs.String("database-url", cfg.DatabaseURL, "PostgreSQL connection URL ($KILN_DATABASE_URL)"),
		dbSchema: fs.String("db-schema", cfg.DBSchema, "Postgres schema ($KILN_DB_SCHEMA)"),
	}, nil
}

// tokenJSON is a token as token list --json prints it.
type tokenJSON struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Admin      bool             `json:"admin"`
	Projects   []tokenProjectJS `json:"projects"`
	CreatedAt  time.Time        `json:"created_at"`
	LastUsedAt *time.Time       `json:"last_used_at"`
	RevokedAt  *time.Time       `json:"revoked_at"`
}

type tokenProjectJS struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func tokenList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := newTokenFlags("token list", stderr)
	if err != nil {
		return err
	}
	asJSON := f.fs.Bool("json", false, "print a JSON array instead of a table")
	pos, err := parse(f.fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("unexpected argument %q\n%s", pos[0], tokenUsage)
	}
	pool, err := app.OpenPool(ctx, *f.dbURL, *f.dbSchema)
	if err != nil {
		return err
	}
	defer pool.Close()
	tokens, err := store.ListTokens(ctx, pool)
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]tokenJSON, 0, len(tokens))
		for _, t := range tokens {
			j := tokenJSON{ID: t.ID, Name: t.Name, Admin: t.Admin, Projects: []tokenProjectJS{},
				CreatedAt: t.CreatedAt.UTC(), LastUsedAt: utc(t.LastUsedAt), RevokedAt: utc(t.RevokedAt)}
			for i, id := range t.ProjectIDs {
				j.Projects = append(j.Projects, tokenProjectJS{ID: id, Name: t.Projects[i]})
			}
			out = append(out, j)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tLAST USED\tREVOKED")
	for _, t := range tokens {
		scope := "admin"
		if !t.Admin {
			scope = cmp.Or(strings.Join(t.Projects, ","), "(no project)")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, scope, stamp(&t.CreatedAt), stamp(t.LastUsedAt), stamp(t.RevokedAt))
	}
	return tw.Flush()
}

func tokenRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := newTokenFlags("token revoke", stderr)
	if err != nil {
		return err
	}
	pos, err := parse(f.fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("give one token id or name\n%s", tokenUsage)
	}
	which := pos[0]
	pool, err := app.OpenPool(ctx, *f.dbURL, *f.dbSchema)
	if err != nil {
		return err
	}
	defer pool.Close()
	tokens, err := store.ListTokens(ctx, pool)
	if err != nil {
		return err
	}
	t, err := pickToken(tokens, which)
	if err != nil {
		return err
	}
	at, already, err := store.RevokeToken(ctx, pool, t.ID)
	if err != nil {
		return err
	}
	if already {
		fmt.Fprintf(stdout, "token %s (%s) was already revoked at %s\n", t.Name, t.ID, stamp(&at))
		return nil
	}
	fmt.Fprintf(stdout, "revoked token %s (%s) at %s: dispatchers refuse it within their auth cache TTL "+
		"(KILN_AUTH_CACHE_TTL) and end its event streams within a heartbeat (KILN_EVENTS_HEARTBEAT)\n",
		t.Name, t.ID, stamp(&at))
	return nil
}

// pickToken finds the token which names: its id, or the name of exactly one
// live token (or, when none is live, of a revoked one).
func pickToken(tokens []store.TokenInfo, which string) (*store.TokenInfo, error) {
	if id, err := uuid.Parse(which); err == nil {
		for i := range tokens {
			if tokens[i].ID == id.String() {
				return &tokens[i], nil
			}
		}
	}
	var live, revoked []*store.TokenInfo
	for i := range tokens {
		if tokens[i].Name != which {
			continue
		}
		if tokens[i].RevokedAt == nil {
			live = append(live, &tokens[i])
		} else {
			revoked = append(revoked, &tokens[i])
		}
	}
	switch {
	case len(live) == 1:
		return live[0], nil
	case len(live) > 1:
		ids := make([]string, len(live))
		for i, t := range live {
			ids[i] = t.ID
		}
		return nil, fmt.Errorf("%d live tokens are named %q (%s): revoke one by its id", len(live), which, strings.Join(ids, ", "))
	case len(revoked) > 0:
		return revoked[len(revoked)-1], nil
	}
	return nil, fmt.Errorf("no token has the id or name %q", which)
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
