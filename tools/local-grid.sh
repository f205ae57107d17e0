#!/usr/bin/env bash
# A persistent local grid for development: an introducer and N storage servers on
# 127.0.0.1, plus a client node, under DIR (default ./local-grid).
#
#   tools/local-grid.sh start [N] [DIR]   # create (first time) and start; prints how to use it
#   tools/local-grid.sh stop [DIR]        # SIGTERM every daemon, wait for them
#   tools/local-grid.sh status [DIR]
#
# Uses .build/release/grid (built if missing). Logs: DIR/<node>/daemon.log.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-}
case "$cmd" in
  start) n=${2:-10}; dir=${3:-local-grid} ;;
  stop|status) dir=${2:-local-grid} ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
GRID=$PWD/.build/release/grid
running() { [ -f "$1/daemon.pid" ] && kill -0 "$(cat "$1/daemon.pid")" 2>/dev/null; }

case "$cmd" in
start)
  [ -x "$GRID" ] || { tools/deps.sh; swift build -c release --product grid >&2; }
  mkdir -p "$dir"
  if [ ! -f "$dir/introducer/grid.conf" ]; then
    "$GRID" introducer create "$dir/introducer" | tail -1 > "$dir/introducer.address"
  fi
  addr=$(cat "$dir/introducer.address")
  for ((i = 0; i < n; i++)); do
    [ -f "$dir/storage$i/grid.conf" ] || "$GRID" storage create "$dir/storage$i" --introducer "$addr" --nickname "storage$i" --reserved-space 1G >/dev/null
  done
  # happy cannot exceed the number of servers (7 is the default, as in Tahoe).
  [ -f "$dir/client/grid.conf" ] || "$GRID" client create "$dir/client" --introducer "$addr" --happy $(( n < 7 ? n : 7 )) >/dev/null
  for node in "$dir"/introducer "$dir"/storage*; do
    kind=storage; [ "$(basename "$node")" = introducer ] && kind=introducer
    if running "$node"; then continue; fi
    nohup "$GRID" "$kind" run "$node" >>"$node/daemon.log" 2>&1 &
    echo $! > "$node/daemon.pid"
  done
  echo "local grid running in $dir: introducer + $(ls -d "$dir"/storage* | wc -l) storage servers"
  echo "  export GRID_NODE_DIR=$(cd "$dir" && pwd)/client"
  echo "  grid upload FILE; grid download CAP -o FILE"
  echo "  tools/local-grid.sh stop $dir"
  ;;
stop)
  for node in "$dir"/*/; do
    node=${node%/}
    if running "$node"; then kill -TERM "$(cat "$node/daemon.pid")"; fi
  done
  for node in "$dir"/*/; do
    node=${node%/}
    if [ -f "$node/daemon.pid" ]; then
      pid=$(cat "$node/daemon.pid")
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      rm -f "$node/daemon.pid"
    fi
  done
  echo "stopped the local grid in $dir"
  ;;
status)
  for node in "$dir"/introducer "$dir"/storage*; do
    [ -f "$node/grid.conf" ] || continue
    if running "$node"; then echo "$(basename "$node"): running (pid $(cat "$node/daemon.pid"))"; else echo "$(basename "$node"): stopped"; fi
  done
  ;;
esac
