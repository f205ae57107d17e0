#!/usr/bin/env bash
# Side-by-side Reed-Solomon throughput: grid's kernels vs Debian's ISA-L 2.30, on this
# machine, in one run. Rounds alternate between the two so machine noise hits both;
# the figure per side is the median over rounds of each round's median.
#
# Usage: tools/bench-codec-vs-isal.sh [ROUNDS=3] [SHAPES="3:7 10:4 17:3 6:3"] [SHARDS="4096 44032 1048576"]
# Needs: libisal-dev (apt-get install libisal-dev) and ../shared/anchors/isal_bench.c.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shapes=${2:-"3:7 10:4 17:3 6:3"}
shards=${3:-"4096 44032 1048576"}
anchors=${ANCHORS:-../shared/anchors}
[ -f /usr/include/isa-l/erasure_code.h ] || { echo "needs libisal-dev: apt-get install libisal-dev" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O2 -o "$out/isal_bench" "$anchors/isal_bench.c" -lisal
swift build -c release --product grid --static-swift-stdlib >&2
GRID=.build/release/grid
paths=$("$GRID" bench codec --shapes 1:1 --shards 64 --reps 1 --min-time 0.001 --json | grep -o '"path": "[a-z0-9]*"' | cut -d'"' -f4 | grep -v portable | tr '\n' ',' | sed 's/,$//')
for r in $(seq "$rounds"); do
  for shape in $shapes; do
    k=${shape%:*}; m=${shape#*:}
    for s in $shards; do
      "$out/isal_bench" "$k" "$m" "$s" 5 0.05 | awk -v r="$r" -F'\t' '$1=="RESULT" && $3=="dispatch" && $4=="cauchy" && ($2=="encode" || $2=="decode-read") {print "isal", r, $5, $6, $7, $2, $8}' >> "$out/raw"
      "$GRID" bench codec --paths "$paths" --shapes "$k:$m" --shards "$s" --reps 5 --min-time 0.05 --json \
        | awk -v r="$r" -F'[:,]' '/"path"/ {gsub(/[" {}]/,""); print $2, r, $4, $6, $8, "encode", $10; print $2, r, $4, $6, $8, "decode-read", $12}' >> "$out/raw"
    done
  done
done
python3 - "$out/raw" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    impl, r, k, m, s, op, v = line.split()
    rows[(impl, int(k), int(m), int(s), op)].append(float(v))
med = {key: statistics.median(v) for key, v in rows.items()}
impls = sorted({k[0] for k in med if k[0] != "isal"}, key=lambda p: ["gfni", "avx2", "ssse3"].index(p))
shapes = sorted({(k[1], k[2], k[3]) for k in med}, key=lambda t: (t[0], t[2]))
hdr = "| k,m | shard | op | ISA-L 2.30 | " + " | ".join(f"grid {p} | ratio" for p in impls) + " |"
print(hdr); print("|" + "---|" * (4 + 2 * len(impls)))
for (k, m, s) in shapes:
    for op in ["encode", "decode-read"]:
        base = med.get(("isal", k, m, s, op))
        cells = []
        for p in impls:
            v = med.get((p, k, m, s, op))
            cells.append(f"{v:.2f} | {v / base:.2f}x" if v and base else "- | -")
        print(f"| {k},{m} | {s} | {op} | {base:.2f} | " + " | ".join(cells) + " |")
print(f"\nGB/s of data (k x shard / time), one core; median over rounds of per-round medians.")
PY
