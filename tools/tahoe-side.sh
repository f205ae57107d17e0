# Sourced by the side-by-side benchmarks (tools/bench-*-vs-tahoe.sh), from the repository
# root: finds the Tahoe-LAFS reference (REF) and its venv (TAHOE_VENV: as given, else
# /work/.venv-tahoe, else ./.venv-tahoe, made with ../shared/tahoe-ref/setup-venv.sh),
# installs the system libraries and builds grid in release (GRID).
REF=$(cd ../shared/tahoe-ref && pwd)
if [ -z "${TAHOE_VENV:-}" ]; then
  if [ -x /work/.venv-tahoe/bin/tahoe ]; then export TAHOE_VENV=/work/.venv-tahoe
  else export TAHOE_VENV=$PWD/.venv-tahoe; [ -x "$TAHOE_VENV/bin/tahoe" ] || "$REF/setup-venv.sh"; fi
fi
tools/deps.sh
swift build -c release --product grid --static-swift-stdlib >&2
GRID=$PWD/.build/release/grid

# start_both_grids NAME: a Tahoe grid and a grid local grid (10 storage servers each,
# 3-of-7-of-10) under a new $work directory in $TMPDIR (default /dev/shm); both are
# stopped and $work removed at exit. Tahoe starts first: it needs fixed ports
# (TAHOE_BASE_PORT and up); grid's daemons take free ones. Sets GRID_NODE_DIR, TAHOE and
# WEB (Tahoe's web API), and defines `tahoe ARGS` for Tahoe's client node.
start_both_grids() {
  [ -d /dev/shm ] && export TMPDIR=${TMPDIR:-/dev/shm}
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap '"$REF/stop-grid.sh" "$work/tahoe" >/dev/null 2>&1 || true; "$GRID" local-grid stop --dir "$work/grid" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  TAHOE="$TAHOE_VENV/bin/tahoe"
  WEB=http://127.0.0.1:$(( ${TAHOE_BASE_PORT:-47100} + 500 ))
  if ! "$REF/start-grid.sh" "$work/tahoe" 10 >&2; then
    "$REF/stop-grid.sh" "$work/tahoe" >&2 || true
    "$REF/start-grid.sh" "$work/tahoe" 10 >&2
  fi
  "$GRID" local-grid start --dir "$work/grid" --reserved-space 0 >&2
  export GRID_NODE_DIR=$work/grid/client
}
tahoe() { "$TAHOE" -d "$work/tahoe/client" "$@"; }
