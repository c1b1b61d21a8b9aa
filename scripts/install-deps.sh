#!/usr/bin/env bash
# Installs every Debian package dts needs to build, test, demo and benchmark.
# Idempotent: apt-get skips what is already installed. Run as root.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config clang-format clang-tidy clang-14 libclang-rt-14-dev
  # PostgreSQL 15 server, server headers (PGXS) and client library
  postgresql-15 postgresql-server-dev-15 postgresql-client-15 libpq-dev libssl-dev
  # applier libraries
  libpqxx-dev rapidjson-dev libcli11-dev libspdlog-dev libcpp-httplib-dev
  # tests
  libgtest-dev libgmock-dev
  # peers compared in bench/
  postgresql-15-wal2json pgcopydb
  # scripts
  python3 python3-psycopg2 util-linux procps bc
  # the status page test (headless)
  chromium openssl
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps.sh: all ${#packages[@]} packages already installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's postgresql-common would create and start a "main" cluster on port 5432:
# dts starts its own throwaway clusters, so keep the package from doing that.
mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/dts-no-main.conf
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps.sh: installed ${missing[*]}"
