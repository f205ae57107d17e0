#!/usr/bin/env bash
# Installs the system libraries grid builds against (OpenSSL, SQLite headers) when
# they are missing. Safe to run repeatedly. Needs root (or sudo) only when installing.
set -euo pipefail
need=()
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
pkg-config --exists sqlite3 2>/dev/null || need+=(libsqlite3-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "grid: installing ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "grid: please install ${need[*]} (apt-get install ${need[*]}) and run again" >&2; exit 1
  fi
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
