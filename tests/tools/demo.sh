#!/usr/bin/env bash
# make demo: Kiln's whole flow on this machine, end to end, on the local stack.
#
#   make dev-up's stack (started here unless it is up; stopped at the end if started here)
#   → an admin creates a managed project through the API: a private repository
#     on the stack's git server, a secret for the agent, postgres and redis add-ons
#   → Kiln provisions it step by step (namespace, ServiceAccount, Secret,
#     add-ons, a workspace StatefulSet whose pod clones the repository, the runner's RBAC)
#   → DATABASE_URL and REDIS_URL work inside the workspace pod
#   → a bot submits a build with curl → progress followed live
#   → the Job's jobrunner execs the agent in the workspace pod, commits, pushes
#     with the project's credentials
#   → the BuildResult, the commit on the git server, and the signed callback
#   → where to watch it in a browser: the web console at $KILN_URL/ui/.
#
# The agent is the real Claude Code CLI, the version tests/tools/claude-code.version
# pins (make claude-code installs it under .tools). No model is reachable
# here, so the CLI talks to a stand-in Messages API (tests/messagesapi) that
# answers with the scripted turns of tests/messagesapi/scripts/demo.json:
# read index.html, edit its heading, say what it did. The demo runs its own
# stand-in with that script and points the project's workspace.env at it.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
export PATH="/usr/local/go/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pretty() { python3 -m json.tool 2>/dev/null || cat; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

started_stack="" api_pid="" cb_pid=""
state="" # set once the stack is up: under .dev, resolved (pods see host paths; build pods hide /tmp)
cleanup() {
  status=$?
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null || true
  [ -n "$cb_pid" ] && kill "$cb_pid" 2>/dev/null || true
  if [ $status -ne 0 ]; then
    echo "demo failed; its files are in $state, the stack's logs in .dev/logs (dispatcher.log) and .dev/kubebox/logs"
  fi
  if [ -n "$started_stack" ]; then
    say "Stopping the stack this demo started (make dev-down)"
    bash tests/tools/dev-down.sh 2>&1 | sed 's/^/  /'
  fi
}
trap cleanup EXIT

say "The local stack (make dev-up)"
set +e; bash tests/tools/dev-up.sh --status; st=$?; set -e
if [ $st -eq 0 ]; then
  echo "  already up: reusing it (and leaving it up)"
else
  started_stack=1
  bash tests/tools/dev-up.sh 2>&1 | grep -v '^export\|^#' | sed 's/^/  /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
fi
# shellcheck disable=SC1091
. .dev/env
echo "  KILN_URL=$KILN_URL  KUBECONFIG=$KUBECONFIG"
echo "  git server $KILN_DEV_GIT_URL (user $KILN_DEV_GIT_USERNAME, token in $KILN_DEV_GIT_TOKEN_FILE)"
state=$(readlink -f .dev)/demo
rm -rf "$state"
mkdir -p "$state"

claude_version=$(tr -d '[:space:]' <tests/tools/claude-code.version)
echo "  the agent: $(.dev/agent/claude --version)"

say "The stand-in Messages API the CLI talks to (scripted: tests/messagesapi/scripts/demo.json)"
.dev/bin/messagesapi -listen 127.0.0.1:0 -script tests/messagesapi/scripts/demo.json \
  -addr-file "$state/messagesapi.addr" 2>"$state/messagesapi.log" &
api_pid=$!
for _ in $(seq 1 100); do [ -s "$state/messagesapi.addr" ] && break; kill -0 $api_pid || { cat "$state/messagesapi.log"; exit 1; }; sleep 0.1; done
api_url=$(cat "$state/messagesapi.addr")
echo "  listening on $api_url"

say "A private repository on the git server: acme-web.git, branch main"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$state/home"
mkdir -p "$HOME"
bare=$KILN_DEV_GIT_ROOT/acme-web.git
rm -rf "$bare"
git init -q --bare -b main "$bare"
git init -q -b main "$state/seed"
printf '<!doctype html>\n<title>Acme</title>\n<h1>Hello</h1>\n' >"$state/seed/index.html"
git -C "$state/seed" add -A
git -C "$state/seed" -c user.name=Seed -c user.email=seed@example.com commit -qm "Initial page"
git -C "$state/seed" push -q "$bare" HEAD:refs/heads/main # on disk: the server's own copy
git_token=$(cat "$KILN_DEV_GIT_TOKEN_FILE")
echo "  $KILN_DEV_GIT_URL/acme-web.git at $(git --git-dir "$bare" rev-parse --short main)"
echo "  without the token: $(curl -s -o /dev/null -w '%{http_code}' "$KILN_DEV_GIT_URL/acme-web.git/info/refs?service=git-upload-pack")"

say "A bot's callback receiver (it checks Kiln-Signature)"
cb_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$cb_port" "$state/callback.json" >"$state/callback.log" 2>&1 <<'PY' &
import hashlib, hmac, http.server, json, sys, os
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        secret = open(out + ".secret").read().strip().encode()
        want = "v1=" + hmac.new(secret, (self.headers["Kiln-Timestamp"] + ".").encode() + body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers["Kiln-Signature"])
        json.dump({"signature_valid": ok, "delivery_id": self.headers["Kiln-Delivery-Id"], "body": json.loads(body)}, open(out, "w"), indent=2)
        self.send_response(204 if ok else 401); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
cb_pid=$!
echo "  http://127.0.0.1:$cb_port/kiln"

auth=(-H "Authorization: Bearer $KILN_TOKEN")
old=$(curl -fsS "${auth[@]}" "$KILN_URL/projects" | python3 -c '
import json, sys
d = json.load(sys.stdin)
items = d["projects"]
print(" ".join(p["id"] for p in items if p.get("name") == "acme-web"))')
for id in $old; do
  say "Retiring the acme-web left by an earlier demo on this stack (DELETE /projects/$id)"
  curl -fsS -o /dev/null -w '  %{http_code}\n' -X DELETE "${auth[@]}" "$KILN_URL/projects/$id"
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$KILN_URL/projects/$id")" = 404 ] && break
    sleep 0.5
  done
  echo "  GET /projects/$id: $(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$KILN_URL/projects/$id")"
done

say "An admin creates the managed project acme-web: repository, a secret for the agent, postgres and redis"
body=$(GIT_URL="$KILN_DEV_GIT_URL/acme-web.git" TOKEN="$git_token" API="$api_url" python3 -c '
import json, os
print(json.dumps({
    "name": "acme-web",
    "repository": {"url": os.environ["GIT_URL"], "branch": "main",
                   "credentials": {"username": "kiln", "token": os.environ["TOKEN"]}},
    "workspace": {"env": {"ANTHROPIC_BASE_URL": os.environ["API"]},
                  "secret_env": {"ANTHROPIC_API_KEY": "sk-ant-demo-stand-in"}},
    "addons": [{"type": "postgres"}, {"type": "redis"}],
}))')
echo "$body" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d["repository"]["credentials"]["token"] = "<the git token>"
print("  POST /projects", json.dumps(d))'
curl -sS -X POST "$KILN_URL/projects" "${auth[@]}" -H 'Content-Type: application/json' -d @- \
  -D "$state/create.headers" -o "$state/create.json" <<<"$body"
code=$(head -1 "$state/create.headers" | cut -d' ' -f2)
location=$(grep -i '^location:' "$state/create.headers" | tr -d '\r' | cut -d' ' -f2)
echo "  $code, Location: $location"
pretty <"$state/create.json"
[ "$code" = 202 ] || exit 1
if grep -q -e "$git_token" -e sk-ant-demo-stand-in "$state/create.json"; then echo "  the answer echoes a secret!"; exit 1; fi
project_id=$(json '["id"]' <"$state/create.json")
json '["callback_secret"]' <"$state/create.json" >"$state/callback.json.secret"

say "Provisioning, step by step (GET /projects/$project_id)"
start=$(date +%s.%N)
seen="" status=provisioning
deadline=$(($(date +%s) + 600))
while [ "$(date +%s)" -lt $deadline ]; do
  curl -fsS "${auth[@]}" "$KILN_URL/projects/$project_id" >"$state/project.json"
  lines=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for s in (d.get("provisioning") or {}).get("steps", []):
    print(s["name"] + " " + s["status"] + ((": " + s["error"]) if s.get("error") else ""))
print("project " + d["status"])' "$state/project.json")
  while IFS= read -r l; do
    grep -qxF "$l" <<<"$seen" || { echo "  $(printf '%-16s' "${l%% *}") ${l#* }"; seen+=$'\n'"$l"; }
  done <<<"$lines"
  status=$(json '["status"]' <"$state/project.json")
  [ "$status" = provisioning ] || break
  sleep 0.2
done
echo "  $status after $(python3 -c "import time; print(f'{time.time() - $start:.1f}s')")"
if [ "$status" != ready ]; then pretty <"$state/project.json"; exit 1; fi
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("  namespace:", d["namespace"], "| pod:", d["pod_name"], "| workdir:", d["workdir"])
for a in d.get("addons", []):
    print("  add-on", a["type"] + ":", ", ".join(a.get("env", [])))' "$state/project.json"
ns=$(json '["namespace"]' <"$state/project.json")
pod=$(json '["pod_name"]' <"$state/project.json")
echo "  objects Kiln made (label kiln.dev/project=$project_id):"
kubectl -n "$ns" get statefulsets,pods,serviceaccounts,secrets,rolebindings -l "kiln.dev/project=$project_id" \
  --no-headers -o custom-columns=KIND:.kind,NAME:.metadata.name 2>&1 | sed 's/^/    /'

say "In the workspace pod: the clone, and the add-ons' URLs at work (kubectl exec)"
kx() { kubectl -n "$ns" exec "$pod" -c workspace -- sh -c "$1"; }
set -x
kx 'git log -1 --format="%h %s" && ls'
kx 'psql -q "$DATABASE_URL" -c "create table t(x int)" -c "insert into t values (42)" -tAc "select x from t"'
kx 'redis-cli --no-auth-warning -u "$REDIS_URL" SET acme-web:k v && redis-cli --no-auth-warning -u "$REDIS_URL" GET acme-web:k'
kx 'redis-cli --no-auth-warning -u "$REDIS_URL" SET other:k v' || true
{ set +x; } 2>/dev/null

say "A bot gets a token scoped to acme-web and submits a build"
bot=$(bin/dispatcher token create --name acme-bot --project acme-web 2>/dev/null)
set -x
curl -sS -X POST "$KILN_URL/projects/$project_id/builds" \
  -H "Authorization: Bearer $bot" -H 'Content-Type: application/json' -H 'Idempotency-Key: acme-landing-1' \
  -d "{\"prompt\":\"Change the landing page heading to say Welcome to Acme ({{ticket}}).\",
       \"variables\":{\"ticket\":\"ACME-7\"},\"auto_commit\":true,\"auto_push\":true,
       \"callback_url\":\"http://127.0.0.1:$cb_port/kiln\"}" | tee "$state/submit.json"
{ set +x; } 2>/dev/null
echo
task_id=$(json '["task_id"]' <"$state/submit.json")

say "Following it live (dispatcher client watch, over SSE)"
KILN_TOKEN=$bot bin/dispatcher client watch "$task_id" || true

say "The final BuildResult"
curl -fsS "$KILN_URL/builds/$task_id" -H "Authorization: Bearer $bot" | pretty | tee "$state/build.json"
status=$(json '["status"]' <"$state/build.json")

say "The commit, as the git server has it ($bare)"
git --git-dir "$bare" log -1 --stat --format='commit %H%nAuthor: %an <%ae>%n%n%B' main
git --git-dir "$bare" show main:index.html
echo "  git server requests for acme-web.git (from .dev/logs/gitserver.log):"
grep ' /acme-web.git/' .dev/logs/gitserver.log | awk '{print $4, $5, $6}' | sort | uniq -c | sed 's/^/  /'

say "What the CLI asked the stand-in Messages API (one request per model turn)"
sed 's/^/  /' "$state/messagesapi.log"

say "The callback the bot received"
for _ in $(seq 1 50); do [ -s "$state/callback.json" ] && break; sleep 0.2; done
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("signature valid:", d["signature_valid"], "| delivery", d["delivery_id"], "| status", d["body"]["status"])' "$state/callback.json" 2>/dev/null || echo "(no callback yet)"

say "A follow-up: the same agent session continues (POST /builds/$task_id/followups)"
set -x
curl -sS -X POST "$KILN_URL/builds/$task_id/followups" \
  -H "Authorization: Bearer $bot" -H 'Content-Type: application/json' \
  -d '{"prompt":"Thanks. Is anything else on the page still saying the old heading?","max_turns":5,"max_budget_usd":1}' \
  | tee "$state/followup.json"
{ set +x; } 2>/dev/null
echo
followup_id=$(json '["task_id"]' <"$state/followup.json")
KILN_TOKEN=$bot bin/dispatcher client watch "$followup_id" >/dev/null 2>&1 || true
curl -fsS "$KILN_URL/builds/$followup_id" -H "Authorization: Bearer $bot" >"$state/followup-build.json"
python3 - "$state/build.json" "$state/followup-build.json" <<'PY'
import json, sys
first, follow = (json.load(open(p)) for p in sys.argv[1:3])
print("  follow-up", follow["task_id"], follow["status"], "| parent_id", follow.get("parent_id"))
print("  session continued:", (follow.get("result") or {}).get("session_id") == (first.get("result") or {}).get("session_id"),
      "| cost $%.4f" % ((follow.get("result") or {}).get("usage") or {}).get("cost_usd", 0))
PY
followup_status=$(json '["status"]' <"$state/followup-build.json")

say "Secrets in the dispatcher's log, the build's events and the cluster's events"
curl -fsS "$KILN_URL/builds/$task_id/events" -H "Authorization: Bearer $bot" -H 'Accept: text/event-stream' \
  --max-time 2 >"$state/events.txt" 2>/dev/null || true
kubectl get events -A -o json >"$state/kube-events.json"
for what in "git token:$git_token" "ANTHROPIC_API_KEY:sk-ant-demo-stand-in"; do
  n=$(cat .dev/logs/dispatcher.log "$state/events.txt" "$state/kube-events.json" | grep -cF -- "${what#*:}" || true)
  echo "  the ${what%%:*} appears $n times"
done

say "Watch it in a browser: the web console"
# The 202 carries console_url (dev-up sets KILN_PUBLIC_URL); a stack started
# before it did has none, and the page is at the same place.
console_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("console_url", ""))' "$state/submit.json")
echo "  $KILN_URL/ui/  (this build: ${console_url:-$KILN_URL/ui/builds/$task_id})"
echo "  sign in with the admin token (KILN_TOKEN in .dev/env), or with acme-bot's token, which sees acme-web only:"
echo "  $bot" # printed above already, by set -x: this terminal only, no log holds it
if [ -n "$started_stack" ]; then
  echo "  (this demo started the stack and stops it now: run make dev-up first, and make demo leaves it up)"
fi

echo
echo "build $task_id: $status; its follow-up $followup_id: $followup_status"
test "$status" = completed
test "$followup_status" = completed
