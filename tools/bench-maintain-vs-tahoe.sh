#!/usr/bin/env bash
# Keeping files alive, side by side with Tahoe-LAFS 1.20 in one run on this machine
# (both grids: 10 storage servers on 127.0.0.1, 3-of-7-of-10, under $TMPDIR, default /dev/shm):
#
#  1. census + lease renewal per file: `grid bench maintain --files N` (grid maintain
#     over N files of 2 KiB) against Tahoe's web API `POST /uri/CAP?t=check&add-lease=true`
#     per file (one at a time, and 8 at once);
#  2. verify of one 128 MiB file: `grid check --verify` against `POST t=check&verify=true`;
#  3. repair of that file after every copy of shares 0, 1 and 2 is deleted from the
#     servers' disks: `grid repair --no-verify` against `POST t=check&repair=true` (a census
#     decides), and `grid repair` against `POST t=check&verify=true&repair=true` (every
#     share read and checked first).
#
#   tools/bench-maintain-vs-tahoe.sh [ROUNDS] [FILES]     # defaults: 3 rounds, 1000 files
#
# Prints the medians and the ratios. Needs the Tahoe venv ($TAHOE_VENV, else
# /work/.venv-tahoe, else ../shared/tahoe-ref/setup-venv.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
FILES=${2:-1000}
source tools/tahoe-side.sh
[ -d /dev/shm ] && export TMPDIR=${TMPDIR:-/dev/shm}
work=$(mktemp -d "${TMPDIR:-/tmp}/grid-maint-vs-tahoe.XXXXXX")
cleanup() {
  "$REF/stop-grid.sh" "$work/tahoe" >/dev/null 2>&1 || true
  "$GRID" local-grid stop --dir "$work/grid" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
head -c $((128 << 20)) /dev/urandom > "$work/big.bin"

echo "== grid: census + lease renewal over $FILES files" >&2
"$GRID" bench maintain --files "$FILES" --rounds "$ROUNDS" --json > "$work/grid-maintain.json"

echo "== grid: verify and repair of 128 MiB" >&2
"$GRID" local-grid start --dir "$work/grid" --reserved-space 0 >&2
export GRID_NODE_DIR=$work/grid/client
cap=$("$GRID" upload "$work/big.bin" | tail -1)
si=$("$GRID" check --json "$cap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["storage_index"])')
: > "$work/grid-times.txt"
for r in $(seq "$ROUNDS"); do
  t0=$(date +%s.%N); "$GRID" check --verify "$cap" > /dev/null; t1=$(date +%s.%N)
  echo "verify $(python3 -c "print($t1 - $t0)")" >> "$work/grid-times.txt"
  for mode in repair repair-no-verify; do
    for n in 0 1 2; do rm -f "$work"/grid/storage*/storage/shares/"${si:0:2}"/"$si"/$n; done
    "$GRID" check "$cap" > /dev/null && { echo "shares were not deleted" >&2; exit 1; } || true
    flag=; [ $mode = repair-no-verify ] && flag=--no-verify
    t0=$(date +%s.%N); "$GRID" repair $flag "$cap" > /dev/null; t1=$(date +%s.%N)
    echo "$mode $(python3 -c "print($t1 - $t0)")" >> "$work/grid-times.txt"
    "$GRID" check "$cap" > /dev/null || { echo "grid repair did not leave the file healthy" >&2; exit 1; }
  done
done
"$GRID" local-grid stop --dir "$work/grid" >&2

echo "== Tahoe-LAFS 1.20" >&2
if ! "$REF/start-grid.sh" "$work/tahoe" 10 >&2; then
  "$REF/stop-grid.sh" "$work/tahoe" >&2 || true
  "$REF/start-grid.sh" "$work/tahoe" 10 >&2
fi
WEB=$(( ${TAHOE_BASE_PORT:-47100} + 500 ))
"$TAHOE_VENV/bin/python" - "$work" "$WEB" "$ROUNDS" <<'PY'
import json, os, statistics, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from allmydata import uri
from allmydata.util import base32
work, web, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{web}"
def put(data):
    req = urllib.request.Request(base + "/uri", data=data, method="PUT")
    return urllib.request.urlopen(req, timeout=600).read().decode().strip()
def post(cap, query):
    req = urllib.request.Request(f"{base}/uri/{cap}?t=check&output=JSON&{query}", data=b"", method="POST")
    return json.loads(urllib.request.urlopen(req, timeout=3600).read())
out = {}
# 1. Per-file check + add-lease over small files.
caps = [put(os.urandom(2048)) for _ in range(60)]
one = []
for c in caps[:30]:
    t = time.monotonic(); r = post(c, "add-lease=true"); one.append(time.monotonic() - t)
    assert r["results"]["healthy"], r
out["lease_one_at_a_time_s"] = statistics.median(one)
t = time.monotonic()
with ThreadPoolExecutor(8) as ex: list(ex.map(lambda c: post(c, "add-lease=true"), caps[30:]))
out["lease_eight_at_once_s_per_file"] = (time.monotonic() - t) / 30
# 2 and 3. Verify and repair of 128 MiB.
big = put(open(f"{work}/big.bin", "rb").read())
si = base32.b2a(uri.from_string(big).get_storage_index()).decode()
ver, rep, vrep = [], [], []
def delete_shares():
    for i in range(10):
        for n in (0, 1, 2):
            p = f"{work}/tahoe/storage{i}/storage/shares/{si[:2]}/{si}/{n}"
            if os.path.exists(p): os.remove(p)
for _ in range(rounds):
    t = time.monotonic(); r = post(big, "verify=true"); ver.append(time.monotonic() - t)
    assert r["results"]["healthy"], r
    for query, times in (("verify=true&repair=true", vrep), ("repair=true", rep)):
        delete_shares()
        t = time.monotonic(); r = post(big, query); times.append(time.monotonic() - t)
        assert r.get("repair-attempted") and r.get("repair-successful"), r
out["verify_s"] = statistics.median(ver); out["repair_s"] = statistics.median(rep); out["verify_repair_s"] = statistics.median(vrep)
out["verify_all"], out["repair_all"], out["verify_repair_all"] = ver, rep, vrep
json.dump(out, open(f"{work}/tahoe.json", "w"))
PY
"$REF/stop-grid.sh" "$work/tahoe" >&2

python3 - "$work" <<'PY'
import json, statistics, sys
w = sys.argv[1]
g = json.load(open(f"{w}/grid-maintain.json"))
t = json.load(open(f"{w}/tahoe.json"))
times = {}
for line in open(f"{w}/grid-times.txt"):
    op, s = line.split(); times.setdefault(op, []).append(float(s))
gv, gr, grn = statistics.median(times["verify"]), statistics.median(times["repair"]), statistics.median(times["repair-no-verify"])
mb = 128 * 1048576 / 1e6
per = g["ms_per_file"] / 1000
print(f"census + lease renewal: grid maintain over {g['files']} files: {g['maintain_median_seconds']:.2f} s = {per*1000:.2f} ms per file "
      f"(runs {', '.join(f'{x:.2f}' for x in g['maintain_seconds'])} s)")
print(f"  Tahoe POST t=check&add-lease=true: {t['lease_one_at_a_time_s']*1000:.0f} ms per file one at a time, "
      f"{t['lease_eight_at_once_s_per_file']*1000:.0f} ms per file 8 at once")
print(f"  ratio: {t['lease_one_at_a_time_s']/per:.0f}x (vs one at a time), {t['lease_eight_at_once_s_per_file']/per:.0f}x (vs 8 at once)")
print(f"verify 128 MiB: grid check --verify {mb/gv:.1f} MB/s ({gv:.2f} s), Tahoe t=check&verify=true {mb/t['verify_s']:.1f} MB/s ({t['verify_s']:.2f} s): {t['verify_s']/gv:.1f}x")
print(f"repair 128 MiB missing shares 0-2, census only: grid repair --no-verify {grn:.2f} s, Tahoe t=check&repair=true {t['repair_s']:.2f} s: {t['repair_s']/grn:.1f}x")
print(f"repair 128 MiB missing shares 0-2, every share verified first: grid repair {gr:.2f} s, Tahoe t=check&verify=true&repair=true {t['verify_repair_s']:.2f} s: {t['verify_repair_s']/gr:.1f}x")
print(f"(grid runs: verify {times['verify']}, repair {times['repair']}, repair --no-verify {times['repair-no-verify']}; "
      f"Tahoe: verify {t['verify_all']}, repair {t['repair_all']}, verify+repair {t['verify_repair_all']})")
PY
