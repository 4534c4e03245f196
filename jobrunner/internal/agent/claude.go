package agent

import (
	"cmp"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Claude is the Claude Code adapter: `claude -p --output-format stream-json --verbose`.
type Claude struct {
	// Binary is the program to run. Default "claude" (looked up on PATH).
	Binary string
}

var _ Adapter = Claude{}

// ClaudeAlwaysDisallowed are added to every run's --disallowedTools:
// the runner's git step commits and pushes, never the agent.
var ClaudeAlwaysDisallowed = []string{"Bash(git commit:*)", "Bash(git push:*)"}

// claudePermissionModes are the modes Claude Code accepts that keep
// permission checks on. bypassPermissions is deliberately absent.
var claudePermissionModes = []string{"default", "acceptEdits", "plan", "dontAsk"}

// Name implements Adapter.
func (Claude) Name() string { return "claude-code" }

// NewParser implements Adapter.
func (Claude) NewParser() Parser { return &claudeParser{} }

// Command implements Adapter. The prompt is returned as Stdin; argv is
//
//	claude -p --output-format stream-json --verbose
//	  --allowedTools T... --disallowedTools T...
//	  --permission-mode MODE --max-turns N [--model M]
//	  [--max-budget-usd AMOUNT] [--resume SESSION]
//
// (each tool its own argument; each list is followed by another flag, so no
// tool can be taken for a positional argument). It refuses bypassPermissions, a missing
// prompt or tool list, tool names that could be read as flags, a budget
// that is negative or not a number, and a session id that is not a UUID.
func (c Claude) Command(s Settings) (Command, error) {
	mode := cmp.Or(s.PermissionMode, "default")
	if strings.EqualFold(mode, "bypassPermissions") {
		return Command{}, fmt.Errorf("permission mode %q: %w", mode, ErrUnsafePermissions)
	}
	if !slices.Contains(claudePermissionModes, mode) {
		return Command{}, fmt.Errorf("permission mode %q: must be one of %s: %w",
			mode, strings.Join(claudePermissionModes, ", "), ErrInvalidSettings)
	}
	if strings.TrimSpace(s.Prompt) == "" {
		return Command{}, fmt.Errorf("prompt: required: %w", ErrInvalidSettings)
	}
	maxTurns := cmp.Or(s.MaxTurns, DefaultMaxTurns)
	if maxTurns < 0 {
		return Command{}, fmt.Errorf("max turns %d: must be positive: %w", maxTurns, ErrInvalidSettings)
	}
	if err := checkArg("model", s.Model); err != nil {
		return Command{}, err
	}
	if s.MaxBudgetUSD < 0 || math.IsNaN(s.MaxBudgetUSD) || math.IsInf(s.MaxBudgetUSD, 0) {
		return Command{}, fmt.Errorf("max budget usd %v: must be a positive amount (0: no budget): %w", s.MaxBudgetUSD, ErrInvalidSettings)
	}
	if s.Resume != "" && !IsSessionID(s.Resume) {
		return Command{}, fmt.Errorf("resume: session id %q: must be a UUID: %w", s.Resume, ErrInvalidSettings)
	}
	allowed, err := toolList("allowed tools", s.AllowedTools)
	if err != nil {
		return Command{}, err
	}
	if len(allowed) == 0 {
		return Command{}, fmt.Errorf("allowed tools: at least one required: %w", ErrInvalidSettings)
	}
	disallowed, err := toolList("disallowed tools", append(slices.Clone(s.DisallowedTools), ClaudeAlwaysDisallowed...))
	if err != nil {
		return Command{}, err
	}

	argv := []string{
		cmp.Or(c.Binary, "claude"),
		"-p",
		"--output-format", "stream-json",
		"--verbose",
		"--allowedTools",
	}
	argv = append(argv, allowed...)
	argv = append(argv, "--disallowedTools")
	argv = append(argv, disallowed...)
	argv = append(argv,
		"--permission-mode", mode,
		"--max-turns", fmt.Sprint(maxTurns),
	)
	if s.Model != "" {
		argv = append(argv, "--model", s.Model)
	}
	if s.MaxBudgetUSD > 0 {
		argv = append(argv, "--max-budget-usd", strconv.FormatFloat(s.MaxBudgetUSD, 'f', -1, 64))
	}
	if s.Resume != "" {
		argv = append(argv, "--resume", s.Resume)
	}

	for _, a := range argv {
		if strings.Contains(a, "dangerously") {
			// Unreachable by construction; a last guard for docs/design.md, invariant 7.
			return Command{}, fmt.Errorf("argument %q: %w", a, ErrUnsafePermissions)
		}
	}
	return Command{Argv: argv, Stdin: []byte(s.Prompt)}, nil
}

// toolList validates and de-duplicates tool names, keeping their order.
func toolList(field string, tools []string) ([]string, error) {
	var out []string
	for _, t := range tools {
		t = strings.TrimSpace(t)
		if t == "" {
			return nil, fmt.Errorf("%s: empty tool name: %w", field, ErrInvalidSettings)
		}
		if err := checkArg(field, t); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// checkArg refuses values that a CLI would read as a flag or that cannot
// travel in argv.
func checkArg(field, v string) error {
	if strings.HasPrefix(v, "-") {
		return fmt.Errorf("%s: %q must not start with '-': %w", field, v, ErrInvalidSettings)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%s: %q contains control characters: %w", field, v, ErrInvalidSettings)
	}
	return nil
}

// sessionIDPattern is a UUID as Claude Code writes session ids (lower-case hex).
var sessionIDPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsSessionID reports whether id is a session id the runner may pass on:
// a UUID (8-4-4-4-12 hex digits), so it can name neither a flag nor a path.
func IsSessionID(id string) bool { return sessionIDPattern.MatchString(id) }
