#!/usr/bin/env bash
# Mutable files, side by side in one run on this machine, both grids with 10 storage
# servers on 127.0.0.1, 3-of-7-of-10, under $TMPDIR (default /dev/shm):
#
#  1. a 1 KiB mutable file from the command line: create, read, overwrite (wall time of
#     each command, median of ROUNDS): `grid upload --mutable`, `grid download`,
#     `grid update` against `tahoe put --mutable --format=MDMF`, `tahoe get`, `tahoe put
#     FILE CAP` (and Tahoe's web API through curl, which spares Tahoe's CLI start-up);
#  2. 128 MiB: grid's immutable upload and download, grid's MDMF create, download and
#     overwrite, and Tahoe's MDMF `tahoe put --mutable --format=MDMF` and `tahoe get`.
#     Every upload is of fresh random bytes (no deduplication).
#
#  3. with GIB=1: a 1 GiB MDMF file through grid: create, download (compared), and 1 MiB
#     written at 500 MiB with `grid update --offset` (only the segments it touches are
#     sent), ROUNDS times; then that range read back and compared.
#
#   tools/bench-mutable-vs-tahoe.sh [ROUNDS]     # default 5; GIB=1 adds part 3
#
# Prints the medians and the ratios the issue asks for (MDMF vs grid's immutable path,
# grid vs Tahoe). Needs the Tahoe venv ($TAHOE_VENV, else /work/.venv-tahoe, else
# ../shared/tahoe-ref/setup-venv.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
source tools/tahoe-side.sh
start_both_grids grid-mut-bench
"$GRID" client fill-key-pool --size $((ROUNDS + 4)) >&2
times="$work/times.txt"; : > "$times"
# t NAME CMD...: runs CMD (its output kept in $work/last.out), appends "NAME seconds" to
# the times file.
t() {
  local name=$1; shift
  local s e; s=$(date +%s.%N); "$@" > "$work/last.out" 2>/dev/null || { echo "FAILED: $name: $*" >&2; exit 1; }; e=$(date +%s.%N)
  echo "$name $(python3 -c "print($e - $s)")" >> "$times"
}
head -c 1024 /dev/urandom > "$work/k1"; head -c 1024 /dev/urandom > "$work/k2"

echo "== 1 KiB mutable files" >&2
gcap=$("$GRID" upload --mutable "$work/k1" | tail -1)
tcap=$(tahoe put --mutable --format=MDMF "$work/k1" 2>/dev/null | tail -1)
wcap=$(curl -sf -X PUT --data-binary @"$work/k1" "$WEB/uri?format=MDMF")
for r in $(seq "$ROUNDS"); do
  t grid-create "$GRID" upload --mutable "$work/k1"
  t grid-read "$GRID" download "$gcap"
  t grid-update "$GRID" update "$gcap" "$work/k2"
  t tahoe-create tahoe put --mutable --format=MDMF "$work/k1"
  t tahoe-read tahoe get "$tcap"
  t tahoe-update tahoe put "$work/k2" "$tcap"
  t web-create curl -sf -X PUT --data-binary @"$work/k1" "$WEB/uri?format=MDMF"
  t web-read curl -sf "$WEB/uri/$wcap"
  t web-update curl -sf -X PUT --data-binary @"$work/k2" "$WEB/uri/$wcap"
done

echo "== 128 MiB" >&2
for r in $(seq "$ROUNDS"); do
  head -c $((128 << 20)) /dev/urandom > "$work/big"
  t grid-imm-up "$GRID" upload "$work/big"
  cap=$(tail -1 "$work/last.out")
  t grid-imm-down "$GRID" download "$cap" -o "$work/out"
  cmp -s "$work/big" "$work/out" || { echo "grid immutable download differs" >&2; exit 1; }
  head -c $((128 << 20)) /dev/urandom > "$work/big"
  t grid-mdmf-create "$GRID" upload --mutable "$work/big"
  m=$(tail -1 "$work/last.out")
  t grid-mdmf-down "$GRID" download "$m" -o "$work/out"
  cmp -s "$work/big" "$work/out" || { echo "grid MDMF download differs" >&2; exit 1; }
  t grid-mdmf-update "$GRID" update "$m" "$work/big"
  if [ "$r" -le 2 ]; then   # Tahoe takes minutes per round: two rounds
    t tahoe-mdmf-create tahoe put --mutable --format=MDMF "$work/big"
    tm=$(tail -1 "$work/last.out")
    t tahoe-mdmf-down tahoe get "$tm" "$work/out"
    cmp -s "$work/big" "$work/out" || { echo "Tahoe MDMF download differs" >&2; exit 1; }
  fi
done

if [ "${GIB:-0}" = 1 ]; then
  echo "== 1 GiB MDMF (grid)" >&2
  rm -f "$work/big" "$work/out"
  head -c $((1 << 30)) /dev/urandom > "$work/gig"
  head -c $((1 << 20)) /dev/urandom > "$work/mib"
  t gib-create "$GRID" upload --mutable "$work/gig"
  g=$(tail -1 "$work/last.out")
  t gib-down "$GRID" download "$g" -o "$work/out"
  cmp -s "$work/gig" "$work/out" || { echo "1 GiB MDMF download differs" >&2; exit 1; }
  rm -f "$work/out"
  for r in $(seq "$ROUNDS"); do t gib-patch "$GRID" update --offset $((500 << 20)) "$g" "$work/mib"; done
  "$GRID" download --offset $((500 << 20)) --length $((1 << 20)) "$g" -o "$work/back"
  cmp -s "$work/mib" "$work/back" || { echo "the 1 MiB written at 500 MiB does not read back" >&2; exit 1; }
fi

python3 - "$times" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, v = line.split(); rows.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in rows.items()}
n = {k: len(v) for k, v in rows.items()}
print("1 KiB mutable file, CLI wall time (median ms; runs)")
for op in ("create", "read", "update"):
    g, t, w = med[f"grid-{op}"], med[f"tahoe-{op}"], med[f"web-{op}"]
    print(f"  {op:7} grid {g*1000:7.1f}   tahoe CLI {t*1000:7.1f} ({t/g:5.1f}x)   tahoe web API {w*1000:7.1f} ({w/g:5.1f}x)   [{n[f'grid-{op}']} runs]")
mb = 128 * 1048576 / 1e6
print("128 MiB (MB/s, median)")
for name, key in (("grid immutable upload", "grid-imm-up"), ("grid immutable download", "grid-imm-down"),
                  ("grid MDMF create", "grid-mdmf-create"), ("grid MDMF download", "grid-mdmf-down"),
                  ("grid MDMF overwrite", "grid-mdmf-update"), ("Tahoe MDMF put", "tahoe-mdmf-create"), ("Tahoe MDMF get", "tahoe-mdmf-down")):
    print(f"  {name:26} {mb/med[key]:8.1f}   ({med[key]:.2f} s, {n[key]} runs)")
print(f"MDMF vs immutable: write {med['grid-imm-up']/med['grid-mdmf-create']*100:.0f}%, read {med['grid-imm-down']/med['grid-mdmf-down']*100:.0f}%")
print(f"grid MDMF vs Tahoe MDMF: write {med['tahoe-mdmf-create']/med['grid-mdmf-create']:.1f}x, read {med['tahoe-mdmf-down']/med['grid-mdmf-down']:.1f}x")
if "gib-create" in med:
    gb = (1 << 30) / 1e6
    print(f"1 GiB MDMF: create {med['gib-create']:.1f} s ({gb/med['gib-create']:.0f} MB/s), download {med['gib-down']:.1f} s ({gb/med['gib-down']:.0f} MB/s), "
          f"1 MiB update at 500 MiB: median {med['gib-patch']*1000:.0f} ms of {n['gib-patch']} (min {min(rows['gib-patch'])*1000:.0f}, max {max(rows['gib-patch'])*1000:.0f})")
PY
