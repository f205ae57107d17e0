#!/usr/bin/env bash
# A persistent local grid for development: an introducer and N storage servers on
# 127.0.0.1, plus a client node, under DIR (default ./local-grid).
#
#   tools/local-grid.sh start [N] [DIR]   # create (first time) and start; prints how to use it
#   tools/local-grid.sh stop [DIR]        # SIGTERM every daemon, wait for them
#   tools/local-grid.sh status [DIR]
#
# A thin wrapper over `grid local-grid` (the launcher `grid demo` and the tests use too),
# with .build/release/grid (built if missing). Logs: DIR/<node>/daemon.log.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-}
case "$cmd" in
  start) n=${2:-10}; dir=${3:-local-grid} ;;
  stop|status) dir=${2:-local-grid} ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
GRID=$PWD/.build/release/grid
[ -x "$GRID" ] || { tools/deps.sh; swift build -c release --product grid --static-swift-stdlib >&2; }
case "$cmd" in
  start) exec "$GRID" local-grid start --servers "$n" --dir "$dir" ;;
  *) exec "$GRID" local-grid "$cmd" --dir "$dir" ;;
esac
