#!/usr/bin/env bash
# Makes sure a Chromium is installed for the console's browser tests
# (tests/browser) and prints its path on stdout. Uses $KILN_CHROMIUM, else
# chromium or chromium-browser on PATH; installs Debian's chromium package
# with apt-get when none is there (as root only). Waits for the locks of
# another apt-get or dpkg instead of failing. Needs no terminal: safe with no
# stdin and CI=true. Meant for development and CI machines, not for production.
set -euo pipefail
log() { echo "ensure-chromium: $*" >&2; }

find_chromium() {
  local name
  for name in ${KILN_CHROMIUM:+"$KILN_CHROMIUM"} chromium chromium-browser; do
    if command -v "$name" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}

# apt_get runs apt-get, waiting (up to 5 minutes) for another apt-get or dpkg
# that holds one of its locks, say one started by hand in the background,
# rather than failing. DPkg::Lock::Timeout covers only dpkg's frontend lock;
# the lists and archives locks fail at once, so retry on those.
apt_get() {
  local out deadline=$((SECONDS + 300)) waited=
  while :; do
    if out=$(apt-get -o DPkg::Lock::Timeout=300 "$@" </dev/null 2>&1); then
      grep -E '^(W|E):' <<<"$out" >&2 || true # warnings only
      return 0
    fi
    if ! grep -q 'Could not get lock' <<<"$out" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "$out" >&2
      return 1
    fi
    [ -n "$waited" ] || log "another apt-get or dpkg holds a lock; waiting for it"
    waited=1
    sleep 3
  done
}

if [ -n "${KILN_CHROMIUM:-}" ] && ! command -v "$KILN_CHROMIUM" >/dev/null 2>&1; then
  log "KILN_CHROMIUM=$KILN_CHROMIUM is not an executable; unset it or point it at a Chromium"
  exit 1
fi

if ! path=$(find_chromium); then
  if [ "$(id -u)" != 0 ]; then
    log "Chromium is not installed (no chromium or chromium-browser on PATH) and installing it needs root:"
    log "  sudo apt-get install --no-install-recommends chromium   (or set KILN_CHROMIUM to a Chromium binary)"
    exit 1
  fi
  log "Chromium is not installed; installing Debian's chromium package with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends chromium
  path=$(find_chromium) || { log "apt-get installed chromium but no chromium is on PATH"; exit 1; }
fi
# The Debian launcher prints a harmless shell warning on some machines; keep
# only the version line.
log "$("$path" --version 2>/dev/null | head -n1)"
echo "$path"
