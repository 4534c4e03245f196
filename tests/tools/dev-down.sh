#!/usr/bin/env bash
# make dev-down: stops exactly what make dev-up started — each process
# recorded in .dev/pids ("PID PROGRAM"), by pid, and only while that pid
# still runs that program; kubebox with `kubebox down --dir .dev/kubebox`.
# Logs stay in .dev/logs; the git server's repositories stay in .dev/git.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
dev=$(readlink -f "$repo/.dev" 2>/dev/null || echo "$repo/.dev")
kubebox=$repo/.kubebox/bin/v1.37.2/kubebox
log() { echo "dev-down: $*" >&2; }
# running PID: the process exists and is not a zombie waiting to be reaped.
running() { readlink "/proc/$1/exe" >/dev/null 2>&1; }

if [ ! -d "$dev/pids" ]; then
  log "nothing to stop (no .dev/pids)"
  rm -f "$dev/env"
  exit 0
fi

# stop NAME: SIGTERM the recorded pid if it still runs the recorded program,
# wait up to 30s, then SIGKILL.
stop() {
  local f=$dev/pids/$1.pid pid prog exe
  [ -f "$f" ] || return 0
  read -r pid prog <"$f"
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || { log "$1 (pid $pid) was not running"; rm -f "$f"; return 0; }
  if [ "${exe% (deleted)}" != "$prog" ]; then
    log "$1: pid $pid now runs $exe, not $prog; leaving it alone"
    rm -f "$f"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then
    log "$1 (pid $pid) did not stop on SIGTERM within 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "stopped $1 (pid $pid)"
  rm -f "$f"
}

stop dispatcher
if [ -f "$dev/pids/kubebox.pid" ]; then
  read -r kb_pid _ <"$dev/pids/kubebox.pid"
  if [ -x "$kubebox" ] && [ -f "$dev/kubebox/pid" ] && "$kubebox" down --dir "$dev/kubebox" >/dev/null 2>&1 &&
    ! running "$kb_pid"; then
    log "stopped kubebox (pid $kb_pid, kubebox down --dir .dev/kubebox)"
    rm -f "$dev/pids/kubebox.pid"
  else
    stop kubebox
  fi
fi
stop messagesapi
stop gitserver
stop servers # stops both add-on servers and removes their directories
rmdir "$dev/pids" 2>/dev/null || { log "left in .dev/pids: $(ls "$dev/pids")"; exit 1; }
rm -rf "$dev/env" "$dev/run"
log "down"
