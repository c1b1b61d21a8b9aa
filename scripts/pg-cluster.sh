#!/usr/bin/env bash
# Throwaway PostgreSQL 15 clusters (wal_level=logical) on loopback for tests, bench and the
# demo. PostgreSQL refuses to run as root, so as root the clusters run as the unprivileged
# user $DTS_PG_USER (created if missing). Every cluster lives under $DTS_CLUSTER_ROOT/NAME and
# `stop` only ever stops a cluster this script created there.
#
#   pg-cluster.sh start NAME PORT [SETTING=VALUE ...]   init (first time) and start
#   pg-cluster.sh stop NAME                             stop it (data kept)
#   pg-cluster.sh destroy NAME                          stop it and delete its directory
#   pg-cluster.sh destroy-all                           every cluster under the root (and the initdb template)
#   pg-cluster.sh drop-template                         remove the initdb template clusters are copied from
#   pg-cluster.sh conninfo NAME                         libpq conninfo of a started cluster
set -euo pipefail

PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
ROOT=${DTS_CLUSTER_ROOT:-/tmp/dts-clusters}
PG_USER=${DTS_PG_USER:-dts}
MARK=.dts-cluster

die() { echo "pg-cluster.sh: $*" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

ensure_user_and_root() {
  if [ "$(id -u)" -eq 0 ]; then
    id "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    mkdir -p "$ROOT"
    chown "$PG_USER" "$ROOT"
    chmod 755 "$ROOT"
  else
    mkdir -p "$ROOT"
  fi
}

cluster_dir() {
  [[ "$1" =~ ^[A-Za-z0-9_-]+$ ]] || die "cluster name '$1' must be letters, digits, - or _"
  echo "$ROOT/$1"
}

# initdb once per server version, then a copy per cluster: a test suite makes ~200 clusters
# and initdb costs three times a copy. The template is made aside and renamed into place, so
# two scripts starting at once never copy a half-made one.
init_data_dir() {
  local data=$1 name=$2 version template
  version=$("$PG_BIN/postgres" --version | awk '{print $3}')
  template="$ROOT/.template-$version"
  if [ ! -f "$template/PG_VERSION" ]; then
    local making
    making=$(as_pg mktemp -d "$ROOT/.template-making.XXXXXX")
    as_pg "$PG_BIN/initdb" -D "$making/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$making.log" 2>&1 \
      || { cat "$making.log" >&2; rm -rf "$making" "$making.log"; die "initdb failed for $name"; }
    rm -f "$making.log"
    as_pg mv -T "$making/data" "$template" 2>/dev/null || true  # another script made it first
    rm -rf "$making"
  fi
  as_pg cp -a "$template" "$data" || die "could not copy the initialised template $template for $name"
}

cmd_start() {
  local name=${1:?usage: start NAME PORT [SETTING=VALUE ...]} port=${2:?usage: start NAME PORT}
  shift 2
  [[ "$port" =~ ^[0-9]+$ ]] || die "port '$port' is not a number"
  # Ports in the kernel's ephemeral range can be taken at random by outgoing connections.
  local lo hi
  read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { lo=32768; hi=60999; }
  if [ "$port" -ge "$lo" ] && [ "$port" -le "$hi" ]; then
    echo "pg-cluster.sh: warning: port $port is in the ephemeral range $lo-$hi; an outgoing connection may hold it" >&2
  fi
  ensure_user_and_root
  local dir; dir=$(cluster_dir "$name")
  if [ ! -f "$dir/$MARK" ]; then
    [ -e "$dir" ] && die "$dir exists but was not made by this script; remove it or pick another name"
    as_pg mkdir -p "$dir"
    init_data_dir "$dir/data" "$name"
    as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
# dts throwaway cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 100
shared_buffers = 256MB
max_wal_size = 4GB
fsync = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
CONF
    # PostgreSQL 15.19 and later load only the output plugins listed here.
    # (grep reads all of it: with pipefail, an early exit would fail the pipe.)
    if "$PG_BIN/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
      echo "output_plugin_libraries = 'pgoutput, test_decoding, dts_decoding, wal2json'" \
        | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
    for kv in "$@"; do
      echo "$kv" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    done
    as_pg tee "$dir/data/pg_hba.conf" >/dev/null <<HBA
local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
HBA
    echo "$port" | as_pg tee "$dir/$MARK" >/dev/null
  fi
  if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    echo "pg-cluster.sh: $name already running on port $(cat "$dir/$MARK")"
    return 0
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { tail -20 "$dir/server.log" >&2; die "could not start $name (log: $dir/server.log)"; }
  echo "pg-cluster.sh: $name running on 127.0.0.1:$port (data $dir/data)"
}

cmd_stop() {
  local dir; dir=$(cluster_dir "${1:?usage: stop NAME}")
  [ -f "$dir/$MARK" ] || die "no cluster '$1' under $ROOT"
  if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
  fi
}

cmd_destroy() {
  local dir; dir=$(cluster_dir "${1:?usage: destroy NAME}")
  [ -f "$dir/$MARK" ] || return 0
  cmd_stop "$1"
  rm -rf "$dir"
}

cmd_destroy_all() {
  [ -d "$ROOT" ] || return 0
  for mark in "$ROOT"/*/"$MARK"; do
    [ -f "$mark" ] || continue
    cmd_destroy "$(basename "$(dirname "$mark")")"
  done
  cmd_drop_template
}

cmd_drop_template() {
  rm -rf "$ROOT"/.template-*
}

cmd_conninfo() {
  local dir; dir=$(cluster_dir "${1:?usage: conninfo NAME}")
  [ -f "$dir/$MARK" ] || die "no cluster '$1' under $ROOT"
  echo "host=127.0.0.1 port=$(cat "$dir/$MARK") user=postgres dbname=postgres"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  destroy) shift; cmd_destroy "$@" ;;
  destroy-all) cmd_destroy_all ;;
  drop-template) cmd_drop_template ;;
  conninfo) shift; cmd_conninfo "$@" ;;
  *) die "usage: pg-cluster.sh start NAME PORT [SETTING=VALUE ...] | stop NAME | destroy NAME | destroy-all | conninfo NAME" ;;
esac
