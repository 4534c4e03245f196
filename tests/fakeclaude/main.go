// Command fakeclaude stands in for the `claude` CLI in Kiln's tests: it
// checks its arguments the way the real CLI does, reads the prompt from
// stdin, replays a stream-json transcript and performs the file edits the
// transcript's Edit and Write tool calls describe, in its working directory.
//
// What to replay is chosen by markers in the prompt, `fake-claude:KEY=VALUE`
// (or the environment, for a whole pod):
//
//	transcript=NAME   replay $FAKE_CLAUDE_FIXTURES/NAME.jsonl ($FAKE_CLAUDE_TRANSCRIPT: a path)
//	run=ID            name of this run's state files (default "default")
//	delay=DURATION    pause between lines (default 0; $FAKE_CLAUDE_DELAY)
//	sleep=DURATION    pause before the final result line (to test cancel)
//	child=1           start a child process in the same process group first
//	setsid-child=1    start a child process in a session of its own first (as the CLI runs Bash tools)
//	ignore-term=1     ignore SIGTERM (so only SIGKILL stops it)
//	bigline=N         print an assistant text line of about N bytes first
//	no-result=1       stop before the result line (a stream without a result)
//	exit=N            exit with N after the replay
//
// In $FAKE_CLAUDE_STATE (if set) it writes ID.pid (its pid), ID.child.pid, ID.setsid-child.pid,
// ID.args.json (its argv) and ID.prompt (what it read on stdin).
//
// Exits 1 without --verbose (as the real CLI does with -p and stream-json)
// and 2 when given --dangerously-skip-permissions.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--fake-child" {
		// The child: sleep until killed.
		time.Sleep(time.Hour)
		return
	}
	os.Exit(run())
}

func run() int {
	args := os.Args[1:]
	if slices.Contains(args, "--dangerously-skip-permissions") {
		fmt.Fprintln(os.Stderr, "fakeclaude: refusing --dangerously-skip-permissions")
		return 2
	}
	if !slices.Contains(args, "-p") && !slices.Contains(args, "--print") {
		fmt.Fprintln(os.Stderr, "fakeclaude: only print mode (-p) is supported")
		return 1
	}
	if !hasFlagValue(args, "--output-format", "stream-json") {
		fmt.Fprintln(os.Stderr, "fakeclaude: expected --output-format stream-json")
		return 1
	}
	if !slices.Contains(args, "--verbose") {
		fmt.Fprintln(os.Stderr, "Error: When using --print, --output-format=stream-json requires --verbose")
		return 1
	}
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeclaude: reading stdin:", err)
		return 1
	}
	m := markers(string(stdin))
	id := orDefault(m["run"], "default")
	state := os.Getenv("FAKE_CLAUDE_STATE")
	if state != "" {
		_ = os.MkdirAll(state, 0o755)
		writeState(state, id+".pid", []byte(strconv.Itoa(os.Getpid())))
		a, _ := json.Marshal(os.Args)
		writeState(state, id+".args.json", a)
		writeState(state, id+".prompt", stdin)
	}
	if m["ignore-term"] == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	for marker, setsid := range map[string]bool{"child": false, "setsid-child": true} {
		if m[marker] != "1" {
			continue
		}
		self, _ := os.Executable()
		child := exec.Command(self, "--fake-child")
		child.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "fakeclaude: starting child:", err)
			return 1
		}
		if state != "" {
			writeState(state, id+"."+marker+".pid", []byte(strconv.Itoa(child.Process.Pid)))
		}
	}

	path := os.Getenv("FAKE_CLAUDE_TRANSCRIPT")
	if name := m["transcript"]; name != "" {
		path = filepath.Join(os.Getenv("FAKE_CLAUDE_FIXTURES"), filepath.Base(name)+".jsonl")
	}
	if path == "" {
		fmt.Fprintln(os.Stderr, "fakeclaude: no transcript (marker fake-claude:transcript=NAME or $FAKE_CLAUDE_TRANSCRIPT)")
		return 1
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeclaude:", err)
		return 1
	}
	delay := duration(orDefault(m["delay"], os.Getenv("FAKE_CLAUDE_DELAY")))
	out := bufio.NewWriter(os.Stdout)
	emit := func(line []byte) {
		out.Write(line)
		out.WriteByte('\n')
		out.Flush()
	}
	if n, _ := strconv.Atoi(m["bigline"]); n > 0 {
		text := strings.Repeat("x", n)
		line, _ := json.Marshal(map[string]any{"type": "assistant", "message": map[string]any{
			"role": "assistant", "content": []any{map[string]any{"type": "text", "text": text}}}})
		emit(line)
	}
	cwd := ""
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var head struct {
			Type    string `json:"type"`
			Subtype string `json:"subtype"`
			CWD     string `json:"cwd"`
			Message struct {
				Content json.RawMessage `json:"content"`
			} `json:"message"`
		}
		_ = json.Unmarshal(line, &head)
		if head.Type == "result" {
			if m["no-result"] == "1" {
				break
			}
			if d := duration(m["sleep"]); d > 0 {
				time.Sleep(d)
			}
		}
		if head.Type == "system" && head.Subtype == "init" {
			cwd = head.CWD
		}
		if head.Type == "assistant" {
			applyEdits(cwd, head.Message.Content)
		}
		emit(line)
		if delay > 0 {
			time.Sleep(delay)
		}
	}
	if n, err := strconv.Atoi(m["exit"]); err == nil {
		return n
	}
	return 0
}

var markerRE = regexp.MustCompile(`fake-claude:([a-z-]+)=(\S+)`)

func markers(prompt string) map[string]string {
	m := map[string]string{}
	for _, sm := range markerRE.FindAllStringSubmatch(prompt, -1) {
		m[sm[1]] = sm[2]
	}
	return m
}

// applyEdits performs the Edit and Write tool calls of an assistant
// message, with paths under the transcript's cwd moved to ours.
func applyEdits(cwd string, content json.RawMessage) {
	var blocks []struct {
		Type  string `json:"type"`
		Name  string `json:"name"`
		Input struct {
			FilePath  string `json:"file_path"`
			OldString string `json:"old_string"`
			NewString string `json:"new_string"`
			Content   string `json:"content"`
		} `json:"input"`
	}
	if json.Unmarshal(content, &blocks) != nil {
		return
	}
	here, _ := os.Getwd()
	for _, b := range blocks {
		if b.Type != "tool_use" || (b.Name != "Edit" && b.Name != "Write") {
			continue
		}
		p := b.Input.FilePath
		if cwd != "" && (p == cwd || strings.HasPrefix(p, strings.TrimSuffix(cwd, "/")+"/")) {
			p = filepath.Join(here, strings.TrimPrefix(p, cwd))
		}
		switch b.Name {
		case "Write":
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(b.Input.Content), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "fakeclaude: Write:", err)
			}
		case "Edit":
			old, err := os.ReadFile(p)
			if err != nil {
				fmt.Fprintln(os.Stderr, "fakeclaude: Edit:", err)
				continue
			}
			if !bytes.Contains(old, []byte(b.Input.OldString)) {
				fmt.Fprintf(os.Stderr, "fakeclaude: Edit: %q not found in %s\n", b.Input.OldString, p)
				continue
			}
			updated := bytes.Replace(old, []byte(b.Input.OldString), []byte(b.Input.NewString), 1)
			if err := os.WriteFile(p, updated, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "fakeclaude: Edit:", err)
			}
		}
	}
}

func hasFlagValue(args []string, flag, value string) bool {
	for i, a := range args {
		if a == flag && i+1 < len(args) && args[i+1] == value {
			return true
		}
		if a == flag+"="+value {
			return true
		}
	}
	return false
}

func writeState(dir, name string, data []byte) {
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err == nil {
		_ = os.Rename(tmp, filepath.Join(dir, name))
	}
}

func duration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
