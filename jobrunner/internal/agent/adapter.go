package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Settings are the knobs of one agent run, most of them from the build's template.
type Settings struct {
	// Prompt is the rendered prompt. Required. It goes to the agent on stdin.
	Prompt string
	// Model names the model; empty leaves the CLI's default.
	Model string
	// MaxTurns caps the agent's turns. Default DefaultMaxTurns.
	MaxTurns int
	// AllowedTools lists the tools (and tool patterns such as "Bash(npm test:*)")
	// the agent may use without asking. Required: at least one.
	AllowedTools []string
	// DisallowedTools lists tools the agent may not use. Adapters add their own
	// must-never entries (for Claude: git commit and git push) to it.
	DisallowedTools []string
	// PermissionMode is the CLI's permission mode. Default "default".
	// A mode that skips permission checks is refused.
	PermissionMode string
	// MaxBudgetUSD caps what the run may spend, in US dollars; 0 means no
	// cap. The CLI checks it after each turn, so a run can end a little
	// above it.
	MaxBudgetUSD float64
	// Resume continues the agent session with this id (a UUID, from an
	// earlier run's Outcome.SessionID) instead of starting a new one.
	Resume string
}

// DefaultMaxTurns is Settings.MaxTurns when unset.
const DefaultMaxTurns = 30

// Command is how to start one agent run.
type Command struct {
	// Argv is the program and its arguments. It never contains the prompt.
	Argv []string
	// Stdin is what to write to the program's standard input (the prompt), then close.
	Stdin []byte
}

// Shell returns Argv quoted for sh -c.
func (c Command) Shell() string { return ShellJoin(c.Argv) }

// Adapter knows one agent CLI: how to start it and how to read its output.
type Adapter interface {
	// Name is a short name for logs and events, e.g. "claude-code".
	Name() string
	// Command builds the command line for a run, or explains why the settings are refused.
	Command(Settings) (Command, error)
	// NewParser returns a parser for the output of one run.
	NewParser() Parser
}

// Parser turns the output lines of one run into events. It is not safe for
// concurrent use; a run needs its own.
type Parser interface {
	// Line parses one output line, without its line ending. A line the parser
	// cannot read yields a KindWarning event, never a panic or an error.
	Line(line []byte) []Event
	// End is called once, when the output ends. Its last event, and only that
	// one, is the run's KindFinal event.
	End() []Event
}

// Errors returned by Adapter.Command.
var (
	// ErrUnsafePermissions: the settings would let the agent act without permission checks.
	ErrUnsafePermissions = errors.New("agent settings would skip permission checks")
	// ErrInvalidSettings: a required setting is missing or malformed.
	ErrInvalidSettings = errors.New("invalid agent settings")
)

// Stream reads the agent's output from r line by line, with no limit on a
// line's length, feeds each line to p, and passes every event to emit in
// order. When r ends, cleanly or not, the events of p.End (ending with the
// Final event) are emitted too. Stream returns the first error of emit, or
// the read error that ended the stream (io.EOF is not an error).
func Stream(r io.Reader, p Parser, emit func(Event) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var readErr error
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			line = bytes.TrimSuffix(line, []byte("\r"))
			for _, e := range p.Line(line) {
				if err := emit(e); err != nil {
					return err
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = fmt.Errorf("reading agent output: %w", err)
			}
			break
		}
	}
	for _, e := range p.End() {
		if err := emit(e); err != nil {
			return err
		}
	}
	return readErr
}
