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
swift build -c release --product grid >&2
GRID=$PWD/.build/release/grid
