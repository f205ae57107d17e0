#!/usr/bin/env bash
# A grid across real hosts on this machine (network namespaces, root), a concurrent
# workload under seeded faults, and a checker: nothing acknowledged lost, nothing wrong.
#
#   tools/netgrid.sh run [--seconds 60] [--seed N] [--introducer-down] [--json FILE] [--keep]
#   tools/netgrid.sh soak --minutes N [--seed N] [--json FILE]
#   tools/netgrid.sh clean      # namespaces and mounts left by a run that was killed -9
#
# Uses $GRID_BIN, else .build/release/grid (built if missing). Needs iproute2; nftables
# (partitions, one-way cuts) when installed (skewed clocks use GRID_CLOCK_OFFSET); says which
# fault kinds it could not make. Exit: 0 lost or wrong 0; 1 something lost or wrong;
# 2 the harness failed; 77 no namespaces here (skipped). See docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  run|soak|clean) ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
if [ -z "${GRID_BIN:-}" ]; then
  GRID_BIN=$PWD/.build/release/grid
  [ -x "$GRID_BIN" ] || { tools/deps.sh; swift build -c release --product grid --static-swift-stdlib >&2; }
fi
export GRID_BIN
exec python3 tools/netgrid.py "$@"
