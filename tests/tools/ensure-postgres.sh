#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for user postgres
# without a password, and that the databases Kiln uses exist. Starts an
# installed server that is stopped; installs one with apt-get when absent.
# Meant for development and CI machines, not for production.
set -euo pipefail
host=127.0.0.1 port=5432
log() { echo "ensure-postgres: $*" >&2; }
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }

ready() { command -v pg_isready >/dev/null && pg_isready -q -h "$host" -p "$port"; }

if ! ready; then
  if ! command -v pg_ctlcluster >/dev/null; then
    log "PostgreSQL is not installed; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  # Development/CI only: trust local TCP connections, as the test machines do.
  if ! grep -qE '^host\s+all\s+all\s+127.0.0.1/32\s+trust' "$hba"; then
    log "allowing trusted connections from 127.0.0.1 in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
  ready || { log "PostgreSQL did not become ready on $host:$port"; exit 1; }
fi

for db in "$@"; do
  if ! psql -h "$host" -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    log "creating database $db"
    psql -h "$host" -p "$port" -U postgres -qc "CREATE DATABASE \"$db\"" || true
  fi
done
log "PostgreSQL ready on $host:$port"
