package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/schema"
)

// Exit statuses of `dispatcher client` (ClientMain).
const (
	ExitOK        = 0   // done; for watch: the build completed
	ExitFailed    = 1   // watch: the build failed
	ExitCancelled = 2   // watch: the build was cancelled; also a usage error
	ExitUsage     = 2   // bad command line
	ExitError     = 3   // the dispatcher could not be reached or refused the request
	ExitInterrupt = 130 // interrupted (Ctrl-C)
)

const clientUsage = `usage: dispatcher client <command> [flags]

Talks to a running dispatcher. Every command takes --url (default $KILN_URL,
else http://127.0.0.1:8080) and --token (default $KILN_TOKEN).

commands:
  submit --project P [flags] PROMPT...   start a build; prints its task id (and on
                                         stderr its web console page, when the
                                         dispatcher has a public URL)
  submit --followup TASK [flags] PROMPT...
                                         start a follow-up of TASK: it continues TASK's
                                         agent session on TASK's project
      --template T  --var k=v (repeatable)  --auto-commit  --auto-push
      --callback-url URL  --idempotency-key K  --watch (then follow it, as watch)
      --budget USD (max_budget_usd)  --turns N (max_turns)  --branch NAME (a review
      branch; {task_id} stands for the build's id)  --fallback fresh (with
      --followup: start a new session if TASK's cannot be continued)
      PROMPT "-" reads the prompt from standard input; P is a project id or name
  get TASK_ID                            print a build as JSON (status, result, callbacks)
  list --project P [--status S] [--limit N] [--cursor C] [--json]
                                         a project's builds, newest first; with
                                         --status pending in queue order (next first)
  cancel TASK_ID [--reason R]            cancel a pending or running build
  watch TASK_ID [--after N] [--ws] [--quiet]
                                         follow a build's events live until it ends,
                                         reconnecting and resuming after disconnects;
                                         says why a pending build waits, and at the end
                                         its branch, kept work, agent session and
                                         web console page

exit status: 0 done (watch: completed), 1 watch: failed, 2 watch: cancelled or a
usage error, 3 the dispatcher was unreachable or refused the request, 130 interrupted.
`

// ClientMain runs `dispatcher client args...`, a command line over package
// dispatcher/client, and returns the exit status. getenv (default os.Getenv)
// supplies KILN_URL and KILN_TOKEN.
func ClientMain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if getenv == nil {
		getenv = os.Getenv
	}
	if len(args) < 1 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, clientUsage)
		if len(args) < 1 {
			return ExitUsage
		}
		return ExitOK
	}
	r := &runner{stdout: stdout, stderr: stderr, stdin: os.Stdin}
	fs := flag.NewFlagSet("dispatcher client "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", cmp.Or(getenv("KILN_URL"), "http://127.0.0.1:8080"), "dispatcher URL ($KILN_URL)")
	tok := fs.String("token", getenv("KILN_TOKEN"), "API token ($KILN_TOKEN); never printed")
	var cmd func(ctx context.Context, c *client.Client, pos []string) (int, error)
	switch args[0] {
	case "submit":
		cmd = r.submitFlags(fs)
	case "get":
		cmd = r.get
	case "list":
		cmd = r.listFlags(fs)
	case "cancel":
		cmd = r.cancelFlags(fs)
	case "watch":
		cmd = r.watchFlags(fs)
	default:
		fmt.Fprintf(stderr, "dispatcher client: unknown command %q\n\n%s", args[0], clientUsage)
		return ExitUsage
	}
	pos, err := parse(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		return ExitUsage // the flag package printed why
	}
	if *tok == "" {
		fmt.Fprintln(stderr, "dispatcher client: no token: set KILN_TOKEN or pass --token")
		return ExitUsage
	}
	code, err := cmd(ctx, &client.Client{BaseURL: *base, Token: *tok}, pos)
	var ue usageError
	switch {
	case err == nil:
		return code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "dispatcher client %s: %v\n", args[0], err)
		return ExitUsage
	case ctx.Err() != nil:
		return ExitInterrupt
	default:
		fmt.Fprintf(stderr, "dispatcher client %s: %v\n", args[0], err)
		return ExitError
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

// parse parses flags wherever they stand among the positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		rest := fs.Args()
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

type runner struct {
	stdout, stderr io.Writer
	stdin          io.Reader
}

func (r *runner) printJSON(v any) error {
	enc := json.NewEncoder(r.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (r *runner) submitFlags(fs *flag.FlagSet) func(context.Context, *client.Client, []string) (int, error) {
	project := fs.String("project", "", "project id or name (required)")
	prompt := fs.String("prompt", "", "the prompt (or give it as arguments)")
	template := fs.String("template", "", "build template (default: the server's default)")
	var vars multiFlag
	fs.Var(&vars, "var", "a template variable k=v (repeatable)")
	autoCommit := fs.Bool("auto-commit", false, "commit the agent's changes")
	autoPush := fs.Bool("auto-push", false, "push the commit")
	callbackURL := fs.String("callback-url", "", "URL to POST the outcome to (signed; docs/callbacks.md)")
	key := fs.String("idempotency-key", "", "Idempotency-Key: the same key and body return the first build (default: a fresh key, kept for the retries after a network error or a 503)")
	watch := fs.Bool("watch", false, "follow the build after submitting it (exit status as watch)")
	ws := fs.Bool("ws", false, "with --watch: follow over the WebSocket")
	followup := fs.String("followup", "", "a task id: start a follow-up of that build (continuing its agent session) instead of a new build")
	fallback := fs.String("fallback", "", `with --followup: "fresh" starts a new session when the earlier one cannot be continued`)
	budget := fs.String("budget", "", "the most the agent may spend, in US dollars (max_budget_usd)")
	turns := fs.String("turns", "", "the most turns the agent may take (max_turns)")
	branch := fs.String("branch", "", "commit to this review branch instead of the project branch ({task_id}: the build's id)")
	return func(ctx context.Context, c *client.Client, pos []string) (int, error) {
		text := *prompt
		if len(pos) > 0 {
			if text != "" {
				return 0, usageError("give the prompt as --prompt or as arguments, not both")
			}
			text = strings.Join(pos, " ")
		}
		if text == "-" {
			b, err := io.ReadAll(r.stdin)
			if err != nil {
				return 0, err
			}
			text = string(b)
		}
		switch {
		case *project != "" && *followup != "":
			return 0, usageError("give --project (a new build) or --followup (a follow-up of a build), not both")
		case *project == "" && *followup == "":
			return 0, usageError("--project (or --followup) and a prompt are required")
		case strings.TrimSpace(text) == "":
			return 0, usageError("a prompt is required")
		}
		spec := schema.BuildSpec{Prompt: text, Template: *template, AutoCommit: *autoCommit, AutoPush: *autoPush,
			CallbackURL: *callbackURL, Branch: *branch}
		if err := limitFlags(&spec, *budget, *turns); err != nil {
			return 0, err
		}
		switch schema.Fallback(*fallback) {
		case schema.FallbackNone:
		case schema.FallbackFresh:
			if *followup == "" {
				return 0, usageError("--fallback: only with --followup")
			}
			spec.Fallback = schema.FallbackFresh
		default:
			return 0, usageError(fmt.Sprintf("--fallback %q: must be %q", *fallback, schema.FallbackFresh))
		}
		for _, v := range vars {
			k, val, ok := strings.Cut(v, "=")
			if !ok || k == "" {
				return 0, usageError(fmt.Sprintf("--var %q: want k=v", v))
			}
			if spec.Variables == nil {
				spec.Variables = map[string]string{}
			}
			spec.Variables[k] = val
		}
		var acc *schema.BuildAccepted
		var err error
		if *followup != "" {
			acc, err = c.Followup(ctx, *followup, spec, *key)
		} else {
			acc, err = c.Submit(ctx, *project, spec, *key)
		}
		if err != nil {
			return 0, err
		}
		fmt.Fprintln(r.stdout, acc.TaskID)
		if acc.ConsoleURL != "" {
			// stderr: stdout stays the bare task id, for id=$(dispatcher client submit ...)
			fmt.Fprintln(r.stderr, consoleLine(acc.ConsoleURL))
		}
		if !*watch {
			return ExitOK, nil
		}
		return r.follow(ctx, c, acc.TaskID, 0, *ws, false)
	}
}

// limitFlags puts --budget and --turns into spec; an empty flag was not given.
func limitFlags(spec *schema.BuildSpec, budget, turns string) error {
	if budget != "" {
		usd, err := strconv.ParseFloat(budget, 64)
		if err != nil || usd <= 0 || math.IsInf(usd, 0) || math.IsNaN(usd) {
			return usageError(fmt.Sprintf("--budget %q: must be a positive number of US dollars (e.g. 2.50)", budget))
		}
		spec.MaxBudgetUSD = &usd
	}
	if turns != "" {
		n, err := strconv.Atoi(turns)
		if err != nil || n < 1 {
			return usageError(fmt.Sprintf("--turns %q: must be a whole number of at least 1", turns))
		}
		spec.MaxTurns = &n
	}
	return nil
}

func (r *runner) get(ctx context.Context, c *client.Client, pos []string) (int, error) {
	if len(pos) != 1 {
		return 0, usageError("want one task id")
	}
	b, err := c.Get(ctx, pos[0])
	if err != nil {
		return 0, err
	}
	return ExitOK, r.printJSON(b)
}

func (r *runner) listFlags(fs *flag.FlagSet) func(context.Context, *client.Client, []string) (int, error) {
	project := fs.String("project", "", "project id or name (required)")
	status := fs.String("status", "", "only builds in this status")
	limit := fs.Int("limit", 20, "builds per page (1-100)")
	cursor := fs.String("cursor", "", "the next page's cursor, from a previous list")
	asJSON := fs.Bool("json", false, "print the page as JSON")
	return func(ctx context.Context, c *client.Client, pos []string) (int, error) {
		if *project == "" || len(pos) > 0 {
			return 0, usageError("--project is required; no arguments")
		}
		id, err := c.ProjectID(ctx, *project)
		if err != nil {
			return 0, err
		}
		page, err := c.List(ctx, id, schema.Status(*status), *limit, *cursor)
		if err != nil {
			return 0, err
		}
		if *asJSON {
			return ExitOK, r.printJSON(page)
		}
		tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TASK ID\tSTATUS\tCREATED\tTEMPLATE\tREQUESTED BY\tWAITING") // a list has summaries: 'get' shows the prompt
		for _, b := range page.Builds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Status, b.CreatedAt.Local().Format(time.DateTime), b.Template,
				b.RequestedBy, waitingColumn(b))
		}
		if err := tw.Flush(); err != nil {
			return 0, err
		}
		if page.NextCursor != "" {
			fmt.Fprintf(r.stderr, "more: --cursor %s\n", page.NextCursor)
		}
		return ExitOK, nil
	}
}

func (r *runner) cancelFlags(fs *flag.FlagSet) func(context.Context, *client.Client, []string) (int, error) {
	reason := fs.String("reason", "", "why (recorded as the build's error)")
	return func(ctx context.Context, c *client.Client, pos []string) (int, error) {
		if len(pos) != 1 {
			return 0, usageError("want one task id")
		}
		b, err := c.Cancel(ctx, pos[0], *reason)
		if err != nil {
			return 0, err
		}
		fmt.Fprintf(r.stdout, "%s %s\n", b.ID, b.Status)
		return ExitOK, nil
	}
}

func (r *runner) watchFlags(fs *flag.FlagSet) func(context.Context, *client.Client, []string) (int, error) {
	after := fs.Int64("after", 0, "start after this event sequence number")
	ws := fs.Bool("ws", false, "follow over the WebSocket instead of Server-Sent Events")
	quiet := fs.Bool("quiet", false, "print only the outcome")
	return func(ctx context.Context, c *client.Client, pos []string) (int, error) {
		if len(pos) != 1 {
			return 0, usageError("want one task id")
		}
		return r.follow(ctx, c, pos[0], *after, *ws, *quiet)
	}
}

// follow watches a build and turns its outcome into the exit status.
func (r *runner) follow(ctx context.Context, c *client.Client, id string, after int64, ws, quiet bool) (int, error) {
	p := &progress{w: r.stdout}
	show := p.show
	if quiet {
		show = func(schema.Event) {}
	}
	st, err := c.Watch(ctx, id, client.WatchOptions{After: after, WebSocket: ws, Show: show,
		Notice: func(s string) { fmt.Fprintln(r.stderr, "watch:", s) }})
	if err != nil {
		return 0, err
	}
	b, err := c.Get(ctx, id)
	if err == nil && b.Status.Terminal() {
		line := fmt.Sprintf("build %s %s", id, b.Status)
		if b.Error != "" {
			line += ": " + b.Error
		}
		if b.Result != nil && b.Result.CommitSHA != "" {
			line += " (commit " + b.Result.CommitSHA + ")"
		}
		fmt.Fprintln(r.stdout, line)
		for _, l := range resultLines(b.Result) {
			fmt.Fprintln(r.stdout, l)
		}
		if b.ConsoleURL != "" {
			fmt.Fprintln(r.stdout, consoleLine(b.ConsoleURL))
		}
	} else {
		fmt.Fprintf(r.stdout, "build %s %s\n", id, st)
	}
	switch st {
	case schema.StatusCompleted:
		return ExitOK, nil
	case schema.StatusFailed:
		return ExitFailed, nil
	default:
		return ExitCancelled, nil
	}
}

// resultLines say where an ended build's work is and how to go on from it:
// its review branch, the branch that kept a stopped build's changes, and the
// agent session a follow-up continues.
func resultLines(res *schema.BuildResult) []string {
	if res == nil {
		return nil
	}
	var out []string
	if res.Branch != "" {
		out = append(out, "branch: "+res.Branch)
	}
	if res.PartialBranch != "" {
		l := "kept work: " + res.PartialBranch
		if sha := res.PartialCommitSHA; sha != "" {
			l += " (commit " + sha
			if res.PartialPushed {
				l += ", pushed"
			}
			l += ")"
		}
		out = append(out, l)
	}
	if res.SessionID != "" {
		out = append(out, "session: "+res.SessionID+" (dispatcher client submit --followup TASK_ID continues it)")
	}
	return out
}

// consoleLine points at a build's page in the web console.
func consoleLine(url string) string { return "console: " + url }

// waitingColumn is where a pending build stands and why it waits ("2nd,
// project_busy"); empty for other builds.
func waitingColumn(b schema.BuildSummary) string {
	var parts []string
	if b.QueuePosition > 0 {
		parts = append(parts, ordinal(b.QueuePosition))
	}
	if b.WaitingReason != "" {
		parts = append(parts, string(b.WaitingReason))
	}
	return strings.Join(parts, ", ")
}
