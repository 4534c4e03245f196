package run

import (
	"fmt"
	"path"
	"strings"

	"github.com/kilnbuild/kiln/jobrunner/internal/agent"
)

// PIDFile is where the agent's session leader records its pid (= its
// process group and session id) in the project pod.
func PIDFile(dir, buildID string) string {
	id := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, buildID)
	return path.Join(dir, "kiln-"+id+".pid")
}

// AgentScript is the `sh -c` script that starts the agent in the project
// pod: enter the workdir, start a new session whose leader writes its pid
// to pidFile, and run argv there (its stdin is the exec's stdin: the
// prompt). The session leader is what KillScript kills as a process group,
// so everything the agent starts goes with it; closing the exec stream
// alone would leave it running.
//
// `setsid -w` waits for the session and passes its exit status on; a setsid
// without -w still works (it only forks when the shell leads a process
// group, and the output stream stays open while the session runs); without
// setsid at all the agent runs in the exec's group and is killed by pid.
func AgentScript(workdir, pidFile string, argv []string) string {
	q := agent.ShellQuote
	inner := fmt.Sprintf(`echo $$ > %s || exit 125; %s; rc=$?; rm -f %s; exit $rc`, q(pidFile), agent.ShellJoin(argv), q(pidFile))
	return fmt.Sprintf(`cd %s || exit 126; `+
		`if setsid -w true 2>/dev/null; then exec setsid -w sh -c %s; `+
		`elif command -v setsid >/dev/null 2>&1; then exec setsid sh -c %s; `+
		`else exec sh -c %s; fi`, q(workdir), q(inner), q(inner), q(inner))
}

// KillScript is the `sh -c` script of the second exec that stops the
// agent: it reads the pid file (waiting up to 3s for it to appear), sends
// SIGTERM to the whole process group, waits up to waitTenths tenths of a
// second, then sends SIGKILL and waits up to 2s more for the group to be
// gone (or only zombies: kill -0 still sees them). It prints what it did and exits 0 once the
// group is gone (or was never there), 3 when there was no pid file.
func KillScript(pidFile string, waitTenths int) string {
	f := agent.ShellQuote(pidFile)
	return fmt.Sprintf(`f=%s; i=0
while [ ! -s "$f" ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
pg=$(cat "$f" 2>/dev/null)
case "$pg" in ''|*[!0-9]*) echo "no agent pid file"; exit 3;; esac
if kill -0 -"$pg" 2>/dev/null; then t=-"$pg"; elif kill -0 "$pg" 2>/dev/null; then t="$pg"; else echo "agent already gone"; rm -f "$f"; exit 0; fi
kill -TERM $t 2>/dev/null
i=0; while kill -0 $t 2>/dev/null && [ $i -lt %d ]; do sleep 0.1; i=$((i+1)); done
if kill -0 $t 2>/dev/null; then kill -KILL $t 2>/dev/null; echo "agent process group $pg killed with SIGKILL"
  i=0; while kill -0 $t 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
else echo "agent process group $pg stopped with SIGTERM"; fi
rm -f "$f"
exit 0`, f, waitTenths)
}
