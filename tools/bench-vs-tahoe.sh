#!/usr/bin/env bash
# Side by side, in one run on this machine: `grid bench grid` (128 MiB through 10 local
# storage servers) and Tahoe-LAFS 1.20 on a 10-server loopback grid started with
# ../shared/tahoe-ref (same encoding 3-of-7-of-10, 1 MiB segments). Prints MB/s and the
# ratios. Order: grid, Tahoe, grid again (the medians of both grid runs are used), so
# load from other users of the machine hits both.
#
#   tools/bench-vs-tahoe.sh [ROUNDS]      # default 3 rounds per size per system
#
# Needs the Tahoe venv: $TAHOE_VENV, else /work/.venv-tahoe, else it runs
# ../shared/tahoe-ref/setup-venv.sh (pip install tahoe-lafs==1.20.0 zfec==1.6.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
source tools/tahoe-side.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/grid-vs-tahoe.XXXXXX")
cleanup() { "$REF/stop-grid.sh" "$work/tahoe" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

echo "== grid (1/2)" >&2
"$GRID" bench grid --size 128MiB --rounds "$ROUNDS" --json > "$work/grid1.json"
echo "== Tahoe-LAFS 1.20" >&2
# Tahoe's grid sometimes misses one server at start-up; try twice.
if ! "$REF/start-grid.sh" "$work/tahoe" 10 >&2; then
  "$REF/stop-grid.sh" "$work/tahoe" >&2 || true
  "$REF/start-grid.sh" "$work/tahoe" 10 >&2
fi
BENCH_SIZES_MIB=128 BENCH_RUNS=$ROUNDS "$TAHOE_VENV/bin/python" "$REF/bench.py" run "$work/tahoe" "$work/tahoe-RESULTS.md" >&2
"$REF/stop-grid.sh" "$work/tahoe" >&2
echo "== grid (2/2)" >&2
"$GRID" bench grid --size 128MiB --rounds "$ROUNDS" --json > "$work/grid2.json"

python3 - "$work" <<'PY'
import json, statistics, sys
w = sys.argv[1]
g = [json.load(open(f"{w}/grid{i}.json")) for i in (1, 2)]
up = statistics.median(g[0]["upload_mb_s"] + g[1]["upload_mb_s"])
down = statistics.median(g[0]["download_mb_s"] + g[1]["download_mb_s"])
rss = max(x["client_peak_rss_bytes"] for x in g) / 1048576
t = json.load(open(f"{w}/tahoe/bench-results.json"))
rows = {r["op"]: r for r in t["rows"] if r["label"] == "128 MiB"}
def mbs(op): return 128 * 1048576 / 1e6 / rows[op]["median_s"]
print("128 MiB, 3-of-10 (happy 7), 1 MiB segments, 10 storage servers on 127.0.0.1, all on this machine")
print(f"grid's paths: Reed-Solomon {g[0].get('simd_path', '?')}, SHA-256 {g[0].get('sha_path', '?')} (GRID_SIMD / GRID_SHA force them)")
print(f"{'':24}{'upload MB/s':>12}{'download MB/s':>15}")
print(f"{'grid (in-process client)':24}{up:12.1f}{down:15.1f}")
for op_up, op_down, name in (("put", "get", "Tahoe CLI"), ("curl put", "curl get", "Tahoe web API (curl)")):
    if op_up in rows and op_down in rows:
        print(f"{name:24}{mbs(op_up):12.1f}{mbs(op_down):15.1f}")
for op_up, op_down, name in (("put", "get", "Tahoe CLI"), ("curl put", "curl get", "Tahoe web API")):
    if op_up in rows and op_down in rows:
        print(f"ratio grid / {name}: upload {up / mbs(op_up):.1f}x, download {down / mbs(op_down):.1f}x")
print(f"grid client peak RSS: {rss:.1f} MiB; Tahoe client node peak RSS: {max(r.get('peak_rss_mib', 0) for r in rows.values()):.0f} MiB")
PY
