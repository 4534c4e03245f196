#!/usr/bin/env bash
# Makes sure redis-server (6.2 or later) is installed: the add-on tests start
# their own on a free port (tests/servers). Installs it with apt-get when
# absent. Meant for development and CI machines, not for production.
set -euo pipefail
log() { echo "ensure-redis: $*" >&2; }

if ! command -v redis-server >/dev/null; then
  log "redis-server is not installed; installing it with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
log "$(redis-server --version | head -n1)"
