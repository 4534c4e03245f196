// Package agent turns a coding-agent CLI into something the runner can drive
// without knowing which CLI it is.
//
// An Adapter builds the command line for one run (Command: argv plus the
// prompt, which always travels on stdin, never in argv) and a Parser that
// turns the CLI's output lines into normalized Events: Init (session,
// model, version, permission mode in effect, tools), Text, ToolCall,
// ToolResult, Retry (a failed API call the agent will retry; Permanent
// says retrying cannot help), Denial (a tool call the agent was refused,
// with a short input summary and the agent's reason), Pushed (the agent
// pushed itself), Notice (the CLI's own messages), Usage, Final, and
// Warning for lines it could not read. Stream reads an output stream with
// no line-length limit and feeds a Parser.
//
// A Recorder folds events into an Outcome (success, a typed schema.Reason
// for every failure, error text with the API's status and message, bounded
// final text, cost, turns, tokens, denials, session id, whether the agent
// pushed) that maps onto schema.BuildResult, and SchemaPayload maps each
// event onto a small schema event payload (schema.AgentTextPayload,
// schema.AgentRetryPayload, schema.PermissionDeniedPayload, ...). A run cut
// short before its result still has an outcome: the failure of the retry
// it was making, if any, and the usage summed from its messages.
//
// Claude is the Claude Code adapter (`claude -p --output-format stream-json
// --verbose`, with the run's --max-turns, --max-budget-usd and --resume of
// an earlier session, whose id must be a UUID). A run its budget stopped
// fails with budget_exceeded, naming the cap and the run's own spend (a
// resumed session's total_cost_usd counts its earlier runs too; the outcome
// does not). It never passes --dangerously-skip-permissions, refuses the
// bypassPermissions mode, and always disallows `git commit` and `git push`:
// committing and pushing is the runner's git step, not the agent's.
//
// The package is pure: it starts no processes and does no network I/O.
// Running the command (in the project pod, over Kubernetes exec) and
// stopping it (at a permanent retry, a cancel, the deadline) belong to the
// runner.
package agent
