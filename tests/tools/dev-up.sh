#!/usr/bin/env bash
# make dev-up: Kiln's local stack, on this machine, in one command.
#
#   PostgreSQL for Kiln (127.0.0.1:5432, database kiln_dev, schema kiln_dev)
#   kubebox (a real control plane and a process node; images → local programs)
#   the add-on servers: PostgreSQL with password auth and redis-server (tests/servers/cmd/servers)
#   a token-checking git smart-HTTP server over .dev/git (tests/gitserver/cmd/gitserver)
#   the stand-in Messages API the Claude Code CLI talks to (tests/messagesapi/cmd/messagesapi)
#   the dispatcher (bin/dispatcher serve) as its ServiceAccount, configured for both add-ons,
#     its web console at $KILN_URL/ui/ (KILN_PUBLIC_URL is its own URL)
#
# Everything lives under .dev/ (git-ignored; pods see the host's files, and
# build pods mount an emptyDir over /tmp, so nothing pods read is under /tmp).
# It writes .dev/env, whose first line is
#   export KILN_URL=… KILN_TOKEN=<admin token> KUBECONFIG=…
# and prints it. make dev-down stops exactly what this started (pids in .dev/pids).
#
#   dev-up.sh           start the stack (or say it is already up, and print .dev/env)
#   dev-up.sh --status  exit 0 when up, 1 when down, 2 when partly up
#
# KILN_DEV_KUBE_IDENTITY=admin runs the dispatcher with the admin kubeconfig
# instead of its ServiceAccount (to tell an RBAC gap from a bug).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
# Build pods mount an emptyDir over /tmp, and pods see the host's files by
# their paths: in a clone under /tmp, .dev is a link to a directory under
# /var/tmp, and every path handed to the cluster is the resolved one.
case "$repo/" in
  /tmp/*) [ -e "$repo/.dev" ] || ln -s "$(mktemp -d /var/tmp/kiln-dev-XXXXXX)" "$repo/.dev" ;;
esac
mkdir -p "$repo/.dev"
dev=$(readlink -f "$repo/.dev")
export PATH="/usr/local/go/bin:$PATH"
kubebox=$repo/.kubebox/bin/v1.37.2/kubebox
kiln_db=${KILN_DEV_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kiln_dev?sslmode=disable}
kiln_schema=kiln_dev
components="servers gitserver messagesapi kubebox dispatcher"

log() { echo "dev-up: $*" >&2; }

# alive NAME: the process recorded in .dev/pids/NAME.pid ("PID PROGRAM") is
# running that program.
alive() {
  local f=$dev/pids/$1.pid pid prog exe
  [ -f "$f" ] || return 1
  read -r pid prog <"$f"
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$prog" ]
}

# status: 0 up, 1 down, 2 partly up; names what is missing on stderr.
status() {
  local up=0 down=0 missing=""
  for c in $components; do
    if alive "$c"; then up=$((up + 1)); else down=$((down + 1)); missing="$missing $c"; fi
  done
  if [ $down -eq 0 ] && [ -f "$dev/env" ]; then return 0; fi
  if [ $up -eq 0 ]; then return 1; fi
  echo "not running:$missing" >&2
  return 2
}

if [ "${1:-}" = --status ]; then
  set +e; status 2>/dev/null; exit $?
fi

set +e; why=$(status 2>&1); st=$?; set -e
case $st in
  0) log "already up (pids in .dev/pids); reusing it"; cat "$dev/env"; exit 0 ;;
  2) log "the stack is partly up ($why): run make dev-down first"; exit 1 ;;
esac

[ -x bin/dispatcher ] && [ -x bin/jobrunner ] || { log "bin/dispatcher or bin/jobrunner missing: run make build"; exit 1; }
[ -x "$kubebox" ] || { log "$kubebox missing: run make kubebox-build"; exit 1; }
claude_version=$(tr -d '[:space:]' <tests/tools/claude-code.version)
claude=$repo/.tools/claude-code/$claude_version/node_modules/@anthropic-ai/claude-code/bin/claude.exe
[ -x "$claude" ] || { log "Claude Code $claude_version is not installed at $claude: run make claude-code"; exit 1; }

started_ok=""
cleanup() {
  if [ -z "$started_ok" ]; then
    log "failed; stopping what was started (logs kept in .dev/logs)"
    bash "$repo/tests/tools/dev-down.sh" >&2 || true
  fi
}
trap cleanup EXIT

rm -rf "$dev/pids" "$dev/kubebox" "$dev/env" "$dev/run"
mkdir -p "$dev/pids" "$dev/logs" "$dev/bin" "$dev/agent" "$dev/git" "$dev/run"
chmod 700 "$dev" "$dev/run"

# start NAME PROGRAM ARGS...: in its own session (a ^C in this terminal does
# not reach it), output in .dev/logs/NAME.log, pid recorded.
start() {
  local name=$1; shift
  setsid "$@" >"$dev/logs/$name.log" 2>&1 </dev/null &
  echo "$! $(readlink -f "$1")" >"$dev/pids/$name.pid"
}
# wait_file NAME FILE: until FILE exists (written by rename), while NAME runs.
wait_file() {
  for _ in $(seq 1 1200); do
    [ -e "$2" ] && return 0
    kill -0 "$(cut -d' ' -f1 "$dev/pids/$1.pid")" 2>/dev/null || { log "$1 exited; its log:"; tail -n 20 "$dev/logs/$1.log" >&2; return 1; }
    sleep 0.1
  done
  log "$1: timed out waiting for $2"; return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

log "building the helper servers into .dev/bin"
go build -o "$dev/bin/servers" ./tests/servers/cmd/servers
go build -o "$dev/bin/gitserver" ./tests/gitserver/cmd/gitserver
go build -o "$dev/bin/messagesapi" ./tests/messagesapi/cmd/messagesapi
cp "$repo/bin/jobrunner" "$dev/bin/jobrunner"
ln -sfn "$claude" "$dev/agent/claude"

log "PostgreSQL for Kiln: database kiln_dev, schema $kiln_schema (fresh: the cluster is new too)"
bash tests/tools/ensure-postgres.sh kiln_dev
PGOPTIONS='-c client_min_messages=warning' psql "$kiln_db" -q -v ON_ERROR_STOP=1 \
  -c "DROP SCHEMA IF EXISTS $kiln_schema CASCADE" -c "CREATE SCHEMA $kiln_schema"
export KILN_DATABASE_URL=$kiln_db KILN_DB_SCHEMA=$kiln_schema
bin/dispatcher migrate >"$dev/logs/migrate.log" 2>&1 || { cat "$dev/logs/migrate.log" >&2; exit 1; }

log "add-on servers: PostgreSQL (password auth) and redis-server on free ports"
start servers "$dev/bin/servers" -env-file "$dev/run/servers.env"
wait_file servers "$dev/run/servers.env"
# shellcheck disable=SC1091
. "$dev/run/servers.env"

log "git server over .dev/git (user kiln, a fresh token in .dev/run/git.token)"
python3 -c 'import secrets; print("gt-" + secrets.token_hex(16))' >"$dev/run/git.token"
chmod 600 "$dev/run/git.token"
start gitserver "$dev/bin/gitserver" -root "$dev/git" -user kiln -token-file "$dev/run/git.token" -addr-file "$dev/run/gitserver.addr"
wait_file gitserver "$dev/run/gitserver.addr"
git_url=$(cat "$dev/run/gitserver.addr")

log "stand-in Messages API (no script: every agent turn answers \"done\")"
start messagesapi "$dev/bin/messagesapi" -listen 127.0.0.1:0 -addr-file "$dev/run/messagesapi.addr"
wait_file messagesapi "$dev/run/messagesapi.addr"
api_url=$(cat "$dev/run/messagesapi.addr")

log "kubebox (state in .dev/kubebox)"
start kubebox "$kubebox" up --dir "$dev/kubebox" \
  --image kilnbuild/kiln-jobrunner:latest="$dev/bin/jobrunner" \
  --image kilnbuild/kiln-workspace:latest=/bin/sh \
  --image kiln-project=/bin/sleep \
  --image sh=/bin/sh --image bash=/bin/bash
wait_file kubebox "$dev/kubebox/ready"
export KUBECONFIG=$dev/kubebox/kubeconfig

log "namespaces and RBAC (deploy/base/namespaces.yaml, every file in deploy/base/rbac)"
kubectl apply -f deploy/base/namespaces.yaml >"$dev/logs/rbac.log"
for f in deploy/base/rbac/*.yaml; do kubectl apply -f "$f" >>"$dev/logs/rbac.log"; done
# The dispatcher authenticates as its ServiceAccount, with exactly those roles.
sa_token=$(kubectl -n kiln create token kiln-dispatcher --duration 24h)
server=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$dev/run/ca.crt"
disp_kc=$dev/run/dispatcher.kubeconfig
rm -f "$disp_kc"
KUBECONFIG=$disp_kc kubectl config set-cluster kubebox --server "$server" --certificate-authority "$dev/run/ca.crt" --embed-certs >/dev/null
KUBECONFIG=$disp_kc kubectl config set-credentials kiln-dispatcher --token "$sa_token" >/dev/null
KUBECONFIG=$disp_kc kubectl config set-context kiln --cluster kubebox --user kiln-dispatcher >/dev/null
KUBECONFIG=$disp_kc kubectl config use-context kiln >/dev/null
chmod 600 "$disp_kc"
if [ "${KILN_DEV_KUBE_IDENTITY:-}" = admin ]; then
  # Debugging RBAC only: the dispatcher as cluster admin instead of its ServiceAccount.
  log "KILN_DEV_KUBE_IDENTITY=admin: the dispatcher uses the admin kubeconfig, not its ServiceAccount"
  disp_kc=$KUBECONFIG
fi

log "the dispatcher (add-ons: postgres, redis; workspace image kilnbuild/kiln-workspace:latest)"
port=$(free_port)
url=http://127.0.0.1:$port
# (HOME is the workspace's own: an emptyDir at /home/kiln.)
workspace_env=$(AGENT="$dev/agent" API="$api_url" python3 -c '
import json, os
print(json.dumps({
    "PATH": os.environ["AGENT"] + ":/usr/local/bin:/usr/bin:/bin",
    "ANTHROPIC_BASE_URL": os.environ["API"],
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "GIT_CONFIG_NOSYSTEM": "1",
}))')
# Settings go in the environment, not argv (the add-on URLs hold passwords).
(
  # KILN_PUBLIC_URL: browsers reach it at the same address; API answers and
  # callbacks then link to a build's web console page (console_url).
  export KILN_LISTEN_ADDR=127.0.0.1:$port KILN_DISPATCHER_URL=$url KILN_PUBLIC_URL=$url
  export KILN_KUBECONFIG=$disp_kc KILN_BUILD_NAMESPACE=kiln-builds KILN_CALLBACK_ALLOWLIST=127.0.0.1/32
  export KILN_ADDON_POSTGRES_URL KILN_ADDON_REDIS_URL
  export KILN_WORKSPACE_IMAGE=kilnbuild/kiln-workspace:latest KILN_WORKSPACE_ENV=$workspace_env
  start dispatcher "$repo/bin/dispatcher" serve
)
for _ in $(seq 1 300); do
  curl -fs "$url/readyz" >/dev/null && break
  alive dispatcher || { log "the dispatcher exited; its log:"; tail -n 20 "$dev/logs/dispatcher.log" >&2; exit 1; }
  sleep 0.1
done
curl -fs "$url/readyz" >/dev/null || { log "the dispatcher is not ready at $url/readyz"; exit 1; }
admin=$(bin/dispatcher token create --name "dev-admin-$(date +%s)" --admin 2>/dev/null)

umask 077
cat >"$dev/env" <<ENV
export KILN_URL=$url KILN_TOKEN=$admin KUBECONFIG=$KUBECONFIG
# For bin/dispatcher token/migrate commands against the stack's database:
export KILN_DATABASE_URL='$kiln_db' KILN_DB_SCHEMA=$kiln_schema
# The git server: repositories are bare directories under KILN_DEV_GIT_ROOT,
# served at KILN_DEV_GIT_URL/<name>.git to user kiln with the token in KILN_DEV_GIT_TOKEN_FILE.
export KILN_DEV_GIT_URL=$git_url KILN_DEV_GIT_ROOT=$dev/git KILN_DEV_GIT_USERNAME=kiln KILN_DEV_GIT_TOKEN_FILE=$dev/run/git.token
# The stand-in Messages API workspaces use (ANTHROPIC_BASE_URL), and the add-on servers' pids.
export KILN_DEV_MESSAGES_URL=$api_url KILN_DEV_POSTGRES_PID=$POSTGRES_PID KILN_DEV_REDIS_PID=$REDIS_PID
ENV
# The add-on admin URLs hold their passwords: only in .dev/run/servers.env (mode 0600).
started_ok=1
log "up; source .dev/env (make dev-down stops it)"
cat "$dev/env"
