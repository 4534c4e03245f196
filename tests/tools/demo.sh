#!/usr/bin/env bash
# make demo: the main flow on this machine, end to end, with curl.
# Postgres up → migrate → dispatcher serving → admin token → project → a bot
# token → a build submitted → its status and events shown.
set -euo pipefail
cd "$(dirname "$0")/../.."
state=.demo
mkdir -p "$state"
db_url=${KILN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kiln?sslmode=disable}
schema=demo_$(date +%s)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
url=http://$addr
export KILN_DATABASE_URL=$db_url KILN_DB_SCHEMA=$schema

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pretty() { python3 -m json.tool 2>/dev/null || cat; }

say "Migrating (schema $schema on $db_url)"
psql "$db_url" -qc "CREATE SCHEMA $schema"
bin/dispatcher migrate

say "Starting the dispatcher on $url (logs: $state/dispatcher.log)"
bin/dispatcher serve --listen-addr "$addr" >"$state/dispatcher.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  psql "$db_url" -qc "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "$url/readyz" >/dev/null && break; sleep 0.1; done
curl -fsS "$url/readyz"; echo

say "Creating an admin token (shown once, stored hashed)"
admin=$(bin/dispatcher token create --name demo-admin --admin)
echo "${admin:0:12}…"

say "Creating project 'acme-web'"
project=$(curl -fsS -X POST "$url/projects" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"acme-web","namespace":"default","pod_name":"acme-web-0","git_branch":"main"}')
echo "$project" | pretty
project_id=$(echo "$project" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

say "A token for the bot, scoped to acme-web"
bot=$(bin/dispatcher token create --name demo-bot --project acme-web)
echo "${bot:0:12}…"

say "The bot submits a build"
set -x
curl -sS -i -X POST "$url/projects/$project_id/builds" \
  -H "Authorization: Bearer $bot" -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \
  -d '{"prompt":"Change the landing page heading to say {{company}}.","variables":{"company":"Acme"},"auto_commit":true,"auto_push":true}' \
  | tee "$state/submit.txt"
{ set +x; } 2>/dev/null
echo
task_id=$(tail -n1 "$state/submit.txt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')

say "A bad request gets a problem naming the field"
curl -sS -X POST "$url/projects/$project_id/builds" -H "Authorization: Bearer $bot" -H 'Content-Type: application/json' \
  -d '{"prompt":"","template":"nope"}' | pretty

say "The build, as the bot sees it"
curl -fsS "$url/builds/$task_id" -H "Authorization: Bearer $bot" | pretty

say "Its events"
curl -fsS "$url/builds/$task_id/events" -H "Authorization: Bearer $bot" | pretty

say "Its River job"
psql "$db_url" -c "SELECT id, kind, state, queue, args FROM $schema.river_job"

status=$(curl -fsS "$url/builds/$task_id" -H "Authorization: Bearer $bot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
echo
echo "build $task_id is $status"
test "$status" = pending
