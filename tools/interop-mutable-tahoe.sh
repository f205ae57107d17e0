#!/usr/bin/env bash
# Mutable files between grid and a real Tahoe-LAFS 1.20 grid, both directions, on this
# machine (both grids: 10 storage servers on 127.0.0.1, 3-of-7-of-10):
#
#  grid -> Tahoe: `grid upload --mutable` (SDMF and MDMF, small and multi-segment), copy
#     the share files from grid's servers' disks into Tahoe's storage nodes, then
#     `tahoe get` with the write and the read-only capability and `tahoe check --verify`;
#     then `grid update` (and, for MDMF, `grid update --offset`), copy again, `tahoe get`.
#  Tahoe -> grid: `tahoe put --mutable` (both formats), copy Tahoe's share files onto
#     grid's servers, `grid download` with both capabilities and `grid check --verify`;
#     then `tahoe put` over the file, copy again, `grid download`.
#
#   tools/interop-mutable-tahoe.sh
#
# Every comparison is byte for byte (cmp); the script stops at the first difference and
# exits 1. Needs the Tahoe venv ($TAHOE_VENV, else /work/.venv-tahoe, else
# ../shared/tahoe-ref/setup-venv.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/tahoe-side.sh
start_both_grids grid-interop

si_of() { "$GRID" caps --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["storage_index"])'; }
ro_of() { "$GRID" caps --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["read"])'; }

# copy SRC_ROOT_GLOB DST_ROOTS... : moves every share file of $si from one grid's disks to
# the other's (share n to destination server n mod count), after removing the old ones there.
copy_shares() {
  local si=$1 src=$2; shift 2
  local dsts=("$@") n=0 f
  for d in "${dsts[@]}"; do rm -rf "$d/${si:0:2}/$si"; done
  for f in $src/${si:0:2}/$si/*; do
    local share; share=$(basename "$f")
    local d=${dsts[$((share % ${#dsts[@]}))]}
    mkdir -p "$d/${si:0:2}/$si"
    cp "$f" "$d/${si:0:2}/$si/$share"
    n=$((n + 1))
  done
  echo "$n"
}
tahoe_disks=(); for i in $(seq 0 9); do tahoe_disks+=("$work/tahoe/storage$i/storage/shares"); done
grid_disks=(); for i in $(seq 0 9); do grid_disks+=("$work/grid/storage$i/storage/shares"); done
same() { cmp -s "$1" "$2" || { echo "FAIL: $3: contents differ" >&2; exit 1; }; echo "ok: $3"; }

: > "$work/empty"
head -c 700 /dev/urandom > "$work/empty2"
head -c 1000 /dev/urandom > "$work/small"
head -c 1000 /dev/urandom > "$work/small2"
head -c $((300 << 10)) /dev/urandom > "$work/multi"
head -c $((300 << 10)) /dev/urandom > "$work/multi2"
head -c 5000 /dev/urandom > "$work/patch"
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
d = bytearray(open(w + "/multi2", "rb").read()); p = open(w + "/patch", "rb").read()
d[131000:131000 + len(p)] = p
open(w + "/multi2-patched", "wb").write(d)
d = bytearray(open(w + "/multi2", "rb").read()); d += p   # an append
open(w + "/multi2-appended", "wb").write(d)
PY

echo "== grid -> Tahoe" >&2
for fmt in sdmf mdmf; do
  for name in empty small multi; do
    what="grid $fmt $name"
    cap=$("$GRID" upload --mutable --format $fmt "$work/$name" | tail -1)
    si=$(si_of "$cap"); ro=$(ro_of "$cap")
    n=$(copy_shares "$si" "$work/grid/storage*/storage/shares" "${tahoe_disks[@]}")
    tahoe get "$cap" "$work/out" 2>/dev/null; same "$work/$name" "$work/out" "$what ($n shares) read by tahoe get (write cap)"
    tahoe get "$ro" "$work/out" 2>/dev/null; same "$work/$name" "$work/out" "$what read by tahoe get (read-only cap)"
    # (the whole report is read before grep looks: grep -q would close the pipe early)
    report=$(tahoe check --verify "$cap" 2>&1) || true
    grep -q "Summary: Healthy" <<< "$report" || { echo "FAIL: tahoe check --verify of $what: $report" >&2; exit 1; }
    echo "ok: $what: tahoe check --verify says healthy"
    "$GRID" update "$cap" "$work/${name}2" > /dev/null
    copy_shares "$si" "$work/grid/storage*/storage/shares" "${tahoe_disks[@]}" > /dev/null
    tahoe get "$ro" "$work/out" 2>/dev/null; same "$work/${name}2" "$work/out" "$what after grid update, read by tahoe get"
    if [ $fmt = mdmf ] && [ $name = multi ]; then
      "$GRID" update --offset 131000 "$cap" "$work/patch" > /dev/null
      copy_shares "$si" "$work/grid/storage*/storage/shares" "${tahoe_disks[@]}" > /dev/null
      tahoe get "$ro" "$work/out" 2>/dev/null; same "$work/multi2-patched" "$work/out" "$what after grid update --offset 131000, read by tahoe get"
      report=$(tahoe check --verify "$cap" 2>&1) || true
      grep -q "Summary: Healthy" <<< "$report" || { echo "FAIL: tahoe check --verify after the partial update: $report" >&2; exit 1; }
      echo "ok: $what: tahoe check --verify says healthy after the partial update"
    fi
  done
done

echo "== Tahoe -> grid" >&2
for fmt in SDMF MDMF; do
  for name in empty small multi; do
    what="Tahoe $fmt $name"
    cap=$(tahoe put --mutable --format=$fmt "$work/$name" 2>/dev/null | tail -1)
    si=$(si_of "$cap"); ro=$(ro_of "$cap")
    n=$(copy_shares "$si" "$work/tahoe/storage*/storage/shares" "${grid_disks[@]}")
    "$GRID" download "$cap" -o "$work/out" > /dev/null; same "$work/$name" "$work/out" "$what ($n shares) read by grid download (write cap)"
    "$GRID" download "$ro" -o "$work/out" > /dev/null; same "$work/$name" "$work/out" "$what read by grid download (read-only cap)"
    "$GRID" check --verify "$ro" > /dev/null || { echo "FAIL: grid check --verify of $what" >&2; "$GRID" check --verify "$ro" >&2; exit 1; }
    echo "ok: $what: grid check --verify says healthy"
    tahoe put "$work/${name}2" "$cap" > /dev/null 2>&1
    copy_shares "$si" "$work/tahoe/storage*/storage/shares" "${grid_disks[@]}" > /dev/null
    "$GRID" download "$ro" -o "$work/out" > /dev/null; same "$work/${name}2" "$work/out" "$what after tahoe put over it, read by grid download"
  done
done
echo "all interop checks passed"
