#!/usr/bin/env bash
# Directories, side by side in one run on this machine, both grids with 10 storage
# servers on 127.0.0.1, 3-of-7-of-10, under $TMPDIR (default /dev/shm):
#
#  1. Concurrent writers: 8 processes each add 25 distinct names to one directory at once
#     (grid: `grid ln`; Tahoe: its web API, PUT /uri/DIR/NAME?t=uri through curl, and
#     `tahoe ln`); how many of the 200 names are there afterwards, and how many failed.
#  2. A directory of N children (default 10,000): add one entry (median of ROUNDS; grid
#     `grid ln` with its client CPU, Tahoe PUT ?t=uri), and list it (`grid ls`, `tahoe ls`,
#     Tahoe's ?t=json).
#  3. A tree of TREE files (default 1,000, 1–8 KiB, in 50 directories) copied in with
#     `cp -r`, then `deep-check --add-lease` of it: objects per second.
#  4. Backup of that tree: first run, unchanged rerun (and what it uploaded), and after
#     changing 1% of the files (how many were uploaded).
#
#   tools/bench-dirs-vs-tahoe.sh [ROUNDS]      # default 5; N=..., TREE=... to change sizes
#
# Needs the Tahoe venv ($TAHOE_VENV, else /work/.venv-tahoe, else
# ../shared/tahoe-ref/setup-venv.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
N=${N:-10000}
TREE=${TREE:-1000}
source tools/tahoe-side.sh
start_both_grids grid-dirs-bench
"$GRID" client fill-key-pool --size 20 >&2
times="$work/times.txt"; : > "$times"
t() {
  local name=$1; shift
  local s e; s=$(date +%s.%N); "$@" > "$work/last.out" 2>"$work/last.err" || { echo "FAILED: $name: $* $(cat "$work/last.err")" >&2; exit 1; }; e=$(date +%s.%N)
  echo "$name $(python3 -c "print($e - $s)")" >> "$times"
}
note() { echo "$1 $2" >> "$times"; }
lit="URI:LIT:nbswy3dpbi"
"$GRID" create-alias b > /dev/null
tahoe create-alias b > /dev/null

echo "== 1. 8 concurrent writers x 25 names" >&2
gdir=$("$GRID" mkdir b:conc)
tdir=$(curl -sf -X POST "$WEB/uri?t=mkdir")
cdir=$(curl -sf -X POST "$WEB/uri?t=mkdir")
s=$(date +%s.%N)
for w in $(seq 1 8); do (for i in $(seq 1 25); do "$GRID" ln "$lit" "$gdir/w$w-$i" > /dev/null 2>>"$work/grid-conc.err" || echo x >> "$work/grid-conc.fail"; done) & done; wait
note grid-conc-seconds "$(python3 -c "print($(date +%s.%N) - $s)")"
s=$(date +%s.%N)
for w in $(seq 1 8); do (for i in $(seq 1 25); do code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data "$lit" "$WEB/uri/$tdir/w$w-$i?t=uri"); case $code in 200|201) ;; *) echo "$code" >> "$work/tahoe-conc.fail";; esac; done) & done; wait
note tahoe-conc-seconds "$(python3 -c "print($(date +%s.%N) - $s)")"
for w in $(seq 1 8); do (for i in $(seq 1 25); do tahoe ln "$lit" "$cdir/w$w-$i" > /dev/null 2>&1 || echo x >> "$work/tahoecli-conc.fail"; done) & done; wait
note grid-conc-present "$("$GRID" ls "$gdir" | wc -l)"
note grid-conc-failed "$(cat "$work/grid-conc.fail" 2>/dev/null | wc -l)"
note tahoe-conc-present "$(curl -sf "$WEB/uri/$tdir?t=json" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[1]["children"]))')"
note tahoe-conc-failed "$(cat "$work/tahoe-conc.fail" 2>/dev/null | wc -l)"
note tahoecli-conc-present "$(curl -sf "$WEB/uri/$cdir?t=json" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[1]["children"]))')"
note tahoecli-conc-failed "$(cat "$work/tahoecli-conc.fail" 2>/dev/null | wc -l)"

echo "== 2. a directory of $N children" >&2
python3 - "$N" "$lit" "$work/children.json" <<'PY'
import json, sys
n, lit, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
json.dump({f"child-{i:06d}.txt": ["filenode", {"ro_uri": lit, "metadata": {}}] for i in range(n)}, open(out, "w"))
PY
tbig=$(curl -sf -X POST --data-binary @"$work/children.json" "$WEB/uri?t=mkdir-with-children")
mkdir -p "$work/many"
python3 -c "
import os, sys
for i in range(int(sys.argv[1])): open(os.path.join(sys.argv[2], 'child-%06d.txt' % i), 'w').write('hello\n')
" "$N" "$work/many"
t grid-bigdir-make "$GRID" cp -r "$work/many" b:
gbig=$("$GRID" ls --json b: | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["children"]["many"][1]["rw_uri"])')
for r in $(seq "$ROUNDS"); do
  t grid-add-one /usr/bin/time -f "%U %S" -o "$work/cpu" "$GRID" ln "$lit" "$gbig/new-$r"
  note grid-add-one-cpu "$(awk '{print $1 + $2}' "$work/cpu")"
  t tahoe-add-one curl -sf -X PUT --data "$lit" "$WEB/uri/$tbig/new-$r?t=uri"
  t grid-ls "$GRID" ls "$gbig"
  t tahoe-ls tahoe ls "$tbig"
  t tahoe-ls-json curl -sf "$WEB/uri/$tbig?t=json"
done

echo "== 3. a tree of $TREE files: cp -r, deep-check --add-lease" >&2
python3 - "$TREE" "$work/tree" <<'PY'
import os, random, sys
n, root = int(sys.argv[1]), sys.argv[2]
random.seed(13)
for i in range(n):
    d = os.path.join(root, f"d{i % 50:02d}")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i:05d}.bin"), "wb").write(os.urandom(random.randint(1024, 8192)))
PY
t grid-cp-tree "$GRID" cp -r "$work/tree" b:
t tahoe-cp-tree tahoe cp -r "$work/tree" b:
for r in $(seq "$ROUNDS"); do
  t grid-deep-check "$GRID" deep-check --add-lease b:tree
  t tahoe-deep-check tahoe deep-check --add-lease b:tree
done
note tree-objects "$(( TREE + 51 ))"

echo "== 4. backup of the tree" >&2
cp -r "$work/tree" "$work/tree-g"; cp -r "$work/tree" "$work/tree-t"
t grid-backup-1 "$GRID" backup --json "$work/tree-g" b:bk
t tahoe-backup-1 tahoe backup "$work/tree-t" b:bk
t grid-backup-2 "$GRID" backup --json "$work/tree-g" b:bk
note grid-backup-2-uploaded "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["files_uploaded"])' "$work/last.out")"
t tahoe-backup-2 tahoe backup "$work/tree-t" b:bk
note tahoe-backup-2-report "\"$(head -1 "$work/last.out" | tr -s ' ')\""
python3 - "$work/tree-g" "$work/tree-t" "$TREE" <<'PY'
import os, sys
n = int(sys.argv[3]) // 100
for root in sys.argv[1:3]:
    for i in range(n):
        p = os.path.join(root, f"d{i % 50:02d}", f"f{i:05d}.bin")
        open(p, "ab").write(b"changed")
PY
t grid-backup-3 "$GRID" backup --json "$work/tree-g" b:bk
note grid-backup-3-uploaded "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["files_uploaded"])' "$work/last.out")"
t tahoe-backup-3 tahoe backup "$work/tree-t" b:bk
note tahoe-backup-3-report "\"$(head -1 "$work/last.out" | tr -s ' ')\""

cp "$times" "${TIMES_OUT:-/tmp/bench-dirs-times.txt}"
python3 - "$times" "$N" "$TREE" <<'PY'
import statistics, sys
rows, notes = {}, {}
for line in open(sys.argv[1]):
    k, v = line.split(" ", 1)
    try: x = float(v)
    except ValueError: notes[k] = v.strip(); continue
    rows.setdefault(k, []).append(x)
med = {k: statistics.median(v) for k, v in rows.items()}
n, tree = sys.argv[2], sys.argv[3]
one = lambda k: int(rows[k][0])
print("1. 8 writers x 25 names into one directory at once")
print(f"   grid (grid ln):          {one('grid-conc-present')}/200 present, {one('grid-conc-failed')} failed, {med['grid-conc-seconds']:.1f} s")
print(f"   Tahoe web API (curl):    {one('tahoe-conc-present')}/200 present, {one('tahoe-conc-failed')} failed, {med['tahoe-conc-seconds']:.1f} s")
print(f"   Tahoe CLI (tahoe ln):    {one('tahoecli-conc-present')}/200 present, {one('tahoecli-conc-failed')} failed")
print(f"2. directory of {n} children (median of {len(rows['grid-add-one'])})")
print(f"   add one entry: grid {med['grid-add-one']*1000:.0f} ms (client CPU {med['grid-add-one-cpu']*1000:.0f} ms), Tahoe PUT ?t=uri {med['tahoe-add-one']*1000:.0f} ms: {med['tahoe-add-one']/med['grid-add-one']:.1f}x")
print(f"   ls: grid {med['grid-ls']*1000:.0f} ms, tahoe ls {med['tahoe-ls']*1000:.0f} ms ({med['tahoe-ls']/med['grid-ls']:.1f}x), ?t=json {med['tahoe-ls-json']*1000:.0f} ms ({med['tahoe-ls-json']/med['grid-ls']:.1f}x)")
obj = int(rows['tree-objects'][0])
print(f"3. tree of {tree} files, {obj} objects")
print(f"   cp -r in: grid {med['grid-cp-tree']:.1f} s, tahoe {med['tahoe-cp-tree']:.1f} s: {med['tahoe-cp-tree']/med['grid-cp-tree']:.1f}x")
print(f"   deep-check --add-lease: grid {obj/med['grid-deep-check']:.0f} objects/s, tahoe {obj/med['tahoe-deep-check']:.0f} objects/s: {med['tahoe-deep-check']/med['grid-deep-check']:.1f}x")
print(f"4. backup of the tree")
print(f"   first run: grid {med['grid-backup-1']:.1f} s, tahoe {med['tahoe-backup-1']:.1f} s: {med['tahoe-backup-1']/med['grid-backup-1']:.1f}x")
print(f"   unchanged rerun: grid {med['grid-backup-2']:.2f} s ({one('grid-backup-2-uploaded')} files uploaded), tahoe {med['tahoe-backup-2']:.2f} s: {med['tahoe-backup-2']/med['grid-backup-2']:.1f}x; tahoe said {notes.get('tahoe-backup-2-report')}")
print(f"   after changing 1%: grid {med['grid-backup-3']:.2f} s ({one('grid-backup-3-uploaded')} files uploaded), tahoe {med['tahoe-backup-3']:.2f} s; tahoe said {notes.get('tahoe-backup-3-report')}")
PY
