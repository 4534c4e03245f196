package jobtemplates

// ClaudeCodeVersion is the Claude Code release that templates are checked
// against: the one the runner image ships and tests/tools/claude-code.version
// pins. A test runs that binary and fails when either differs.
const ClaudeCodeVersion = "2.1.328"

// ClaudeCode2_1_328Tools are the built-in tools of Claude Code 2.1.328
// (ClaudeCodeVersion), the names its init line lists when every one of them
// is allowed, and the only names besides MCP tools (mcp__server__tool) that
// Validate accepts in agent.allowedTools and agent.disallowedTools. Glob, Grep and
// the Task* list tools only appear when a template names them; the others are
// always there. LS, MultiEdit and TodoWrite, tools of earlier releases, are
// not: 2.1.328 ignores a rule that names them. Task is the sub-agent tool
// (the model sees it as Agent).
var ClaudeCode2_1_328Tools = []string{
	"Bash", "CronCreate", "CronDelete", "CronList", "Edit", "EnterWorktree",
	"ExitWorktree", "Glob", "Grep", "ListAgents", "Monitor", "NotebookEdit",
	"Read", "ReportFindings", "ScheduleWakeup", "SendMessage", "Skill", "Task",
	"TaskCreate", "TaskGet", "TaskList", "TaskStop", "TaskUpdate", "ToolSearch",
	"WebFetch", "WebSearch", "Workflow", "Write",
}

// AcceptEditsCommands are the Bash commands Claude Code ClaudeCodeVersion
// runs without asking in permission mode acceptEdits when their paths are
// inside the working directory, with no Bash rule allowing them: the CLI's
// own list. Measured with only Read allowed: mkdir -p, rm -rf of a folder,
// sed -i, touch, cp and mv ran; rm outside the workdir, rm -rf .git, chmod
// and sed's e command were denied. This is why Validate wants acceptEdits
// acknowledged (Agent.AcceptEditsFilesystemCommands).
var AcceptEditsCommands = []string{"mkdir", "touch", "rm", "rmdir", "mv", "cp", "sed"}

// mcpToolPrefix starts the names of MCP tools ("mcp__github__get_issue"),
// which come from the project's MCP configuration rather than the CLI, so
// Validate does not check them against ClaudeCode2_1_328Tools.
const mcpToolPrefix = "mcp__"
