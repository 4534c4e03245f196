// Package agent turns a coding-agent CLI into something the runner can drive
// without knowing which CLI it is.
//
// An Adapter builds the command line for one run (Command: argv plus the
// prompt, which always travels on stdin, never in argv) and a Parser that
// turns the CLI's output lines into normalized Events: Text, ToolCall,
// ToolResult, Usage, Final, and Warning for lines it could not read. Stream
// reads an output stream with no line-length limit and feeds a Parser.
// A Recorder folds events into an Outcome (success, error, bounded final
// text, cost, turns, tokens) that maps onto schema.BuildResult and
// schema.Usage, and SchemaPayload maps each event onto a small schema event
// payload (schema.AgentTextPayload, schema.ToolCallPayload, ...).
//
// Claude is the Claude Code adapter (`claude -p --output-format stream-json
// --verbose`). It never passes --dangerously-skip-permissions, refuses the
// bypassPermissions mode, and always disallows `git commit` and `git push`:
// committing and pushing is the runner's git step, not the agent's.
//
// The package is pure: it starts no processes and does no network I/O.
// Running the command (in the project pod, over Kubernetes exec) belongs to
// the runner.
package agent
