package harness

import (
	"path/filepath"
	"time"

	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// Scripts of the model (the stand-in Messages API) that builds share.

// EditScript is a model that reads file, replaces old with new in it and
// answers final: three turns, each with its own token counts.
func EditScript(p *Project, file, old, new, final string) messagesapi.Script {
	path := filepath.Join(p.Workdir, file)
	return messagesapi.Script{Name: "edit " + file, Turns: []messagesapi.Turn{
		{Text: "Let me look at " + file + ".", Usage: messagesapi.Usage{InputTokens: 1200, OutputTokens: 40},
			Tools: []messagesapi.ToolUse{{Name: "Read", Input: map[string]any{"file_path": path}}}},
		{Usage: messagesapi.Usage{InputTokens: 1500, OutputTokens: 90},
			Tools: []messagesapi.ToolUse{{Name: "Edit", Input: map[string]any{"file_path": path, "old_string": old, "new_string": new}}}},
		{Text: final, Usage: messagesapi.Usage{InputTokens: 1700, OutputTokens: 30}},
	}}
}

// WriteScript is a model that writes a new file and answers final.
func WriteScript(p *Project, file, content, final string) messagesapi.Script {
	return messagesapi.Script{Name: "write " + file, Turns: []messagesapi.Turn{
		{Tools: []messagesapi.ToolUse{{Name: "Write", Input: map[string]any{
			"file_path": filepath.Join(p.Workdir, file), "content": content}}}},
		{Text: final},
	}}
}

// StallScript is a model that looks for files, then takes forever to answer.
func StallScript() messagesapi.Script {
	return messagesapi.Script{Name: "stall", Turns: []messagesapi.Turn{
		{Tools: []messagesapi.ToolUse{{Name: "Glob", Input: map[string]any{"pattern": "*.html"}}}},
		{Stall: 10 * time.Minute, Text: "too late"},
	}}
}
