#!/usr/bin/env bash
# make demo: Kiln's whole flow on this machine, end to end.
#
#   PostgreSQL → kubebox (a real Kubernetes control plane with a process node)
#   → the dispatcher, running with its least-privilege RBAC role
#   → a project pod holding a sample git repository (and its bare remote)
#   → a bot submits a build with curl → progress followed live
#   → the Job's jobrunner execs the agent in the project pod, commits, pushes
#   → the BuildResult, the commit in the remote, and the signed callback.
#
# The agent is the real Claude Code CLI, the version tests/tools/claude-code.version
# pins (make claude-code installs it under .tools). No model is reachable
# here, so the CLI talks to a stand-in Messages API (tests/messagesapi) that
# answers with the scripted turns of tests/messagesapi/scripts/demo.json:
# read index.html, edit its heading, say what it did.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
export PATH="/usr/local/go/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pretty() { python3 -m json.tool 2>/dev/null || cat; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# Pods must see these files, and build pods mount an emptyDir over /tmp.
state=$(mktemp -d /var/tmp/kiln-demo-XXXXXX)
db_url=${KILN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/kiln?sslmode=disable}
schema=demo_$(date +%s)
kb_pid="" disp_pid="" cb_pid="" api_pid=""
cleanup() {
  status=$?
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null || true
  [ -n "$disp_pid" ] && kill "$disp_pid" 2>/dev/null && wait "$disp_pid" 2>/dev/null || true
  [ -n "$cb_pid" ] && kill "$cb_pid" 2>/dev/null || true
  [ -n "$kb_pid" ] && "$repo/.kubebox/bin/v1.37.2/kubebox" down --dir "$state/kubebox" >/dev/null 2>&1 || true
  psql "$db_url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  if [ $status -eq 0 ]; then rm -rf "$state"; else echo "demo failed; state kept in $state (dispatcher.log, messagesapi.log, kubebox/logs)"; fi
}
trap cleanup EXIT

say "Building the binaries; the agent is Claude Code"
mkdir -p "$state/bin" "$state/agent"
go build -o "$state/bin/jobrunner" ./jobrunner
go build -o "$state/bin/messagesapi" ./tests/messagesapi/cmd/messagesapi
cp bin/dispatcher "$state/bin/dispatcher"
claude_version=$(tr -d '[:space:]' <tests/tools/claude-code.version)
claude="$repo/.tools/claude-code/$claude_version/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
[ -x "$claude" ] || { echo "Claude Code $claude_version is not installed at $claude: run make claude-code" >&2; exit 1; }
ln -s "$claude" "$state/agent/claude"
echo "  claude --version: $("$state/agent/claude" --version)"

say "The stand-in Messages API the CLI talks to (scripted: tests/messagesapi/scripts/demo.json)"
"$state/bin/messagesapi" -listen 127.0.0.1:0 -script tests/messagesapi/scripts/demo.json \
  -addr-file "$state/messagesapi.addr" 2>"$state/messagesapi.log" &
api_pid=$!
for _ in $(seq 1 100); do [ -s "$state/messagesapi.addr" ] && break; kill -0 $api_pid || { cat "$state/messagesapi.log"; exit 1; }; sleep 0.1; done
api_url=$(cat "$state/messagesapi.addr")
echo "  listening on $api_url"

say "Starting kubebox (etcd, kube-apiserver, controller-manager, scheduler v1.37.2 and a process node)"
"$repo/.kubebox/bin/v1.37.2/kubebox" up --dir "$state/kubebox" \
  --image kilnbuild/kiln-jobrunner:latest="$state/bin/jobrunner" --image kiln-project=/bin/sleep \
  >"$state/kubebox.log" 2>&1 &
kb_pid=$!
for _ in $(seq 1 600); do [ -f "$state/kubebox/ready" ] && break; kill -0 $kb_pid || { cat "$state/kubebox.log"; exit 1; }; sleep 0.2; done
export KUBECONFIG="$state/kubebox/kubeconfig"
kubectl version 2>/dev/null | sed 's/^/  /'

say "Namespaces, service accounts and RBAC (deploy/base/rbac, as deployed)"
kubectl create namespace kiln >/dev/null
kubectl create namespace kiln-builds >/dev/null
kubectl create namespace demo >/dev/null
sed 's/namespace: kiln-projects/namespace: demo/' deploy/base/rbac/runner.yaml | kubectl apply -f - | sed 's/^/  /'
kubectl apply -f deploy/base/rbac/dispatcher.yaml | sed 's/^/  /'
# The dispatcher authenticates as its ServiceAccount, with exactly that Role.
token=$(kubectl -n kiln create token kiln-dispatcher --duration 2h)
server=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$state/ca.crt"
disp_kc="$state/dispatcher.kubeconfig"
KUBECONFIG=$disp_kc kubectl config set-cluster kubebox --server "$server" --certificate-authority "$state/ca.crt" --embed-certs >/dev/null
KUBECONFIG=$disp_kc kubectl config set-credentials kiln-dispatcher --token "$token" >/dev/null
KUBECONFIG=$disp_kc kubectl config set-context kiln --cluster kubebox --user kiln-dispatcher >/dev/null
KUBECONFIG=$disp_kc kubectl config use-context kiln >/dev/null
echo "  dispatcher can create jobs in kiln-builds: $(KUBECONFIG=$disp_kc kubectl auth can-i create jobs -n kiln-builds)"
echo "  dispatcher can create jobs in demo:        $(KUBECONFIG=$disp_kc kubectl auth can-i create jobs -n demo || true)"

say "A sample repository, its bare remote, and the project's long-lived pod"
export GIT_CONFIG_NOSYSTEM=1 HOME="$state/home"
mkdir -p "$HOME"
git init -q --bare -b main "$state/remote.git"
git clone -q "$state/remote.git" "$state/work" 2>/dev/null
printf '<!doctype html>\n<title>Acme</title>\n<h1>Hello</h1>\n' >"$state/work/index.html"
git -C "$state/work" add -A
git -C "$state/work" -c user.name=Seed -c user.email=seed@example.com commit -qm "Initial page"
git -C "$state/work" push -q origin HEAD:refs/heads/main
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: acme-web-0, namespace: demo, labels: {app: acme-web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: kiln-project
    args: ["infinity"]
    workingDir: $state/work
    env:
    - {name: PATH, value: "$state/agent:/usr/local/bin:/usr/bin:/bin"}
    - {name: HOME, value: "$state/home"}
    - {name: GIT_CONFIG_NOSYSTEM, value: "1"}
    # Claude Code, offline: its API is the stand-in; no telemetry, no updates.
    - {name: ANTHROPIC_BASE_URL, value: "$api_url"}
    - {name: ANTHROPIC_API_KEY, value: "sk-ant-demo-stand-in"}
    - {name: DISABLE_TELEMETRY, value: "1"}
    - {name: DISABLE_ERROR_REPORTING, value: "1"}
    - {name: DISABLE_AUTOUPDATER, value: "1"}
    - {name: CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, value: "1"}
    volumeMounts: [{name: work, mountPath: $state/work}]
  volumes:
  - {name: work, hostPath: {path: $state/work, type: Directory}}
YAML
kubectl -n demo wait --for=condition=Ready pod/acme-web-0 --timeout=60s | sed 's/^/  /'

say "PostgreSQL, migrations (schema $schema) and the dispatcher"
psql "$db_url" -qc "CREATE SCHEMA $schema"
export KILN_DATABASE_URL=$db_url KILN_DB_SCHEMA=$schema
"$state/bin/dispatcher" migrate 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
KILN_LISTEN_ADDR=127.0.0.1:$port KILN_KUBECONFIG=$disp_kc KILN_BUILD_NAMESPACE=kiln-builds \
KILN_CALLBACK_ALLOWLIST=127.0.0.1/32 \
  "$state/bin/dispatcher" serve >"$state/dispatcher.log" 2>&1 &
disp_pid=$!
for _ in $(seq 1 100); do curl -fs "$url/readyz" >/dev/null && break; sleep 0.1; done
curl -fsS "$url/readyz"; echo

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

say "An admin creates project acme-web; a bot gets a token scoped to it"
admin=$("$state/bin/dispatcher" token create --name demo-admin --admin 2>/dev/null)
project=$(curl -fsS -X POST "$url/projects" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d @- <<JSON
{"name":"acme-web","namespace":"demo","pod_name":"acme-web-0","container":"main","workdir":"$state/work",
 "git_remote":"origin","git_branch":"main","commit_author_name":"Kiln Bot","commit_author_email":"bot@kiln.example"}
JSON
)
echo "$project" | pretty
project_id=$(echo "$project" | json '["id"]')
echo "$project" | json '["callback_secret"]' >"$state/callback.json.secret"
bot=$("$state/bin/dispatcher" token create --name acme-bot --project acme-web 2>/dev/null)

say "The bot submits a build"
set -x
curl -sS -X POST "$url/projects/$project_id/builds" \
  -H "Authorization: Bearer $bot" -H 'Content-Type: application/json' -H 'Idempotency-Key: acme-landing-1' \
  -d "{\"prompt\":\"Change the landing page heading to say Welcome to Acme ({{ticket}}).\",
       \"variables\":{\"ticket\":\"ACME-7\"},\"auto_commit\":true,\"auto_push\":true,
       \"callback_url\":\"http://127.0.0.1:$cb_port/kiln\"}" | tee "$state/submit.json"
{ set +x; } 2>/dev/null
echo
task_id=$(json '["task_id"]' <"$state/submit.json")

say "Following it live (dispatcher client watch, over SSE)"
KILN_URL=$url KILN_TOKEN=$bot "$state/bin/dispatcher" client watch "$task_id" || true

say "The final BuildResult"
curl -fsS "$url/builds/$task_id" -H "Authorization: Bearer $bot" | pretty | tee "$state/build.json"
status=$(json '["status"]' <"$state/build.json")

say "The commit, as the remote has it"
git --git-dir "$state/remote.git" log -1 --stat --format='commit %H%nAuthor: %an <%ae>%n%n%B' main
git --git-dir "$state/remote.git" show main:index.html

say "What the CLI asked the stand-in Messages API (one request per model turn)"
sed 's/^/  /' "$state/messagesapi.log"

say "The callback the bot received"
for _ in $(seq 1 50); do [ -s "$state/callback.json" ] && break; sleep 0.2; done
cat "$state/callback.json" 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print("signature valid:", d["signature_valid"], "| delivery", d["delivery_id"], "| status", d["body"]["status"])' || echo "(no callback yet)"

echo
echo "build $task_id: $status"
test "$status" = completed
