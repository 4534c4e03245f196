package run

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/kilnbuild/kiln/jobrunner/internal/agent"
)

// EnvAgentRun marks every process of one agent run. The agent starts with
// KILN_AGENT_RUN=<build id> in its environment and everything it starts
// inherits it — including the Bash tool commands the CLI runs in sessions of
// their own, which a process-group kill misses — so the stop finds them all
// by it in /proc/PID/environ. A process that clears its environment
// (env -i) escapes it.
const EnvAgentRun = "KILN_AGENT_RUN"

// safeID keeps a build id to characters that need no quoting in a file
// name, an environment value or a pattern.
func safeID(buildID string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, buildID)
}

// AgentMarker is the environment entry that marks the agent run of buildID.
func AgentMarker(buildID string) string { return EnvAgentRun + "=" + safeID(buildID) }

// PIDFile is where the agent's wrapper records the agent's pid in the project pod.
func PIDFile(dir, buildID string) string { return path.Join(dir, "kiln-"+safeID(buildID)+".pid") }

// promptFile holds the prompt between the wrapper reading it and the agent
// opening it (then it is unlinked at once; the agent reads it from its open fd).
func promptFile(dir, buildID string) string {
	return path.Join(dir, "kiln-"+safeID(buildID)+".prompt")
}

// procsLib is the shell functions the agent's wrapper and the kill share.
//
//	has PID   the process is alive (not a zombie: its environ reads empty) and marked
//	marked    prints the pids of the run's live processes
//	sweep     SIGKILLs marked processes until none is left (about 3s at most); prints the count
//	stop W    SIGTERMs the agent (the CLI then ends its own tool processes), waits up
//	          to W tenths of a second, sweeps, and prints what it did; status 4 if
//	          marked processes are left
//
// Only POSIX sh, tr, grep, cat, kill and sleep (with fractions, as in
// coreutils and busybox) are used, so it works in any image.
func procsLib(dir, buildID string) string {
	return fmt.Sprintf(`f=%s; m=%s
has() { { tr '\000' '\n' < "/proc/$1/environ"; } 2>/dev/null | grep -qxF -e "$m"; }
marked() {
  for e in $(grep -lF -e "$m" /proc/[0-9]*/environ 2>/dev/null); do
    p=${e#/proc/}; p=${p%%/environ}
    [ "$p" != "$$" ] && has "$p" && echo "$p"
  done
}
sweep() {
  n=0; i=0
  while [ $i -lt 30 ]; do
    ps=$(marked); [ -z "$ps" ] && break
    for p in $ps; do kill -KILL "$p" 2>/dev/null && n=$((n+1)); done
    i=$((i+1)); sleep 0.1
  done
  echo $n
}
stop() {
  a=$(cat "$f" 2>/dev/null)
  case "$a" in ''|*[!0-9]*) a=;; esac
  if [ -n "$a" ] && has "$a"; then
    kill -TERM "$a" 2>/dev/null
    i=0; while has "$a" && [ $i -lt "$1" ]; do sleep 0.1; i=$((i+1)); done
    if has "$a"; then msg="agent (pid $a) still running $(($1/10)).$(($1%%10))s after SIGTERM"
    else msg="agent (pid $a) stopped with SIGTERM"; fi
  elif [ -n "$a" ]; then msg="agent (pid $a) already gone"
  else msg="no agent pid file"; fi
  n=$(sweep)
  case $n in 0) ;; 1) msg="$msg; 1 process of the run killed with SIGKILL";; *) msg="$msg; $n processes of the run killed with SIGKILL";; esac
  left=$(marked | wc -l)
  if [ "$left" -gt 0 ]; then echo "$msg; $left still running"; return 4; fi
  echo "$msg"
}
`, agent.ShellQuote(PIDFile(dir, buildID)), agent.ShellQuote(AgentMarker(buildID)))
}

// AgentScript is the `sh -c` script that runs the agent in the project pod.
// Its stdin (AgentStdin) is the prompt's length in bytes on a line, the
// prompt, and then nothing until the runner is done with the exec.
//
// It enters workdir, reads the prompt into a private file, starts argv in
// the background with the marker AgentMarker(buildID) in its environment and
// the prompt as its stdin (the file is unlinked once open), and writes its pid to
// PIDFile. A watchdog keeps reading stdin: its end while the agent runs
// means the runner (or its exec stream) is gone — the kubelet neither kills
// an exec'd process when its client goes away nor stops its children, it
// only closes its stdin — and then the watchdog stops the agent as
// KillScript does, waiting waitTenths after SIGTERM. When the agent exits,
// whatever it left running (a server started in the background, say) is
// killed too, and the script exits with the agent's status (125: no
// prompt; 126: no workdir).
func AgentScript(workdir, dir, buildID string, argv []string, waitTenths int) string {
	q := agent.ShellQuote
	return procsLib(dir, buildID) + fmt.Sprintf(`cd %s || exit 126
exec 3<&0
IFS= read -r n || { echo "kiln: no prompt on stdin" >&2; exit 125; }
case "$n" in ''|*[!0-9]*) echo "kiln: bad prompt length $n" >&2; exit 125;; esac
pf=%s
(umask 077 && head -c "$n" > "$pf") || { rm -f "$pf"; exit 125; }
[ $(wc -c < "$pf") -eq "$n" ] || { rm -f "$pf"; echo "kiln: prompt cut short" >&2; exit 125; }
exec 4< "$pf"; rm -f "$pf"
%s %s <&4 3<&- 4<&- &
a=$!
exec 4<&-
echo "$a" > "$f"
(while IFS= read -r _; do :; done; stop %d; rm -f "$f") <&3 >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$a"; rc=$?
kill "$w" 2>/dev/null
n=$(sweep)
[ "$n" -gt 0 ] && echo "kiln: $n process(es) the agent left running killed" >&2
rm -f "$f"
exit $rc
`, q(workdir), q(promptFile(dir, buildID)), AgentMarker(buildID), agent.ShellJoin(argv), waitTenths)
}

// KillScript is the `sh -c` script of the second exec that stops the
// agent: it waits up to 3s for the pid file, SIGTERMs the agent, waits up to
// waitTenths tenths of a second for it to end, then SIGKILLs every process
// that carries the run's marker, until none is left. It prints what it did
// and exits 0 when nothing of the run is left, 3 when there was no pid file,
// 4 when marked processes survived.
func KillScript(dir, buildID string, waitTenths int) string {
	return procsLib(dir, buildID) + fmt.Sprintf(`i=0; while [ ! -s "$f" ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
[ -s "$f" ]; nofile=$?
stop %d; rc=$?
rm -f "$f"
[ $rc -ne 0 ] && exit $rc
[ $nofile -ne 0 ] && exit 3
exit 0
`, waitTenths)
}

// AgentStdin is the agent exec's stdin: the prompt's length on a line and
// the prompt, then nothing — it stays open, the wrapper's watchdog, until
// done is closed; then it ends.
func AgentStdin(prompt []byte, done <-chan struct{}) io.Reader {
	head := strconv.Itoa(len(prompt)) + "\n"
	return &heldReader{r: io.MultiReader(strings.NewReader(head), bytes.NewReader(prompt)), done: done}
}

type heldReader struct {
	r    io.Reader
	done <-chan struct{}
}

func (h *heldReader) Read(p []byte) (int, error) {
	if h.r != nil {
		n, err := h.r.Read(p)
		if err != io.EOF {
			return n, err
		}
		h.r = nil
		if n > 0 {
			return n, nil
		}
	}
	<-h.done
	return 0, io.EOF
}
