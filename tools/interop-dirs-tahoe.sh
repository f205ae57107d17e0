#!/usr/bin/env bash
# Directories between grid and a real Tahoe-LAFS 1.20 grid, both directions, on this
# machine (both grids: 10 storage servers on 127.0.0.1, 3-of-7-of-10):
#
#  grid -> Tahoe: grid makes a three-level tree with every child kind (SDMF and MDMF
#     directories, an immutable directory tree from `grid backup` (DIR2-CHK, DIR2-LIT),
#     CHK and LIT files, SDMF and MDMF files); every share file of everything in its
#     manifest is copied into Tahoe's storage nodes; then `tahoe ls --json` lists it,
#     `tahoe get alias:a/b/c` reads files by path, and `tahoe deep-check --verify` says
#     every object is healthy.
#  Tahoe -> grid: Tahoe makes a tree (`tahoe mkdir`, `cp -r`, `backup`); its shares are
#     copied onto grid's servers; grid lists it (`ls --json`), reads every file by path,
#     `deep-check --verify`s it, and changes it (ln: add, mv: rename, rm: unlink); the
#     changed directory's shares are copied back, and Tahoe reads the change.
#
#   tools/interop-dirs-tahoe.sh
#
# Every comparison is byte for byte; the script stops at the first difference and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/tahoe-side.sh
start_both_grids grid-dirs-interop

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
same() { cmp -s "$1" "$2" || fail "$3: contents differ"; ok "$3"; }
tahoe_disks=(); for i in $(seq 0 9); do tahoe_disks+=("$work/tahoe/storage$i/storage/shares"); done
grid_disks=(); for i in $(seq 0 9); do grid_disks+=("$work/grid/storage$i/storage/shares"); done

# copy_si SI SRC_GLOB DST_DISKS...: every share file of SI from one grid's disks to the
# other's (share n to destination server n mod 10), replacing what was there.
copy_si() {
  local si=$1 src=$2; shift 2
  local dsts=("$@") f
  for d in "${dsts[@]}"; do rm -rf "$d/${si:0:2}/$si"; done
  for f in $src/${si:0:2}/$si/*; do
    [ -e "$f" ] || continue
    local share; share=$(basename "$f")
    local d=${dsts[$((share % ${#dsts[@]}))]}
    mkdir -p "$d/${si:0:2}/$si"
    cp "$f" "$d/${si:0:2}/$si/$share"
  done
}
# copy_tree SIS_FILE SRC_GLOB DST_DISKS...: copy_si for every storage index listed.
copy_tree() {
  local list=$1 src=$2; shift 2
  local n=0 si
  while read -r si; do [ -n "$si" ] && { copy_si "$si" "$src" "$@"; n=$((n + 1)); }; done < "$list"
  echo "$n"
}

mkdir -p "$work/in/sub/empty" "$work/in/sub/deeper"
head -c 200000 /dev/urandom > "$work/in/big.bin"
echo "a small file" > "$work/in/small.txt"
head -c 3000 /dev/urandom > "$work/in/sub/deeper/mid.bin"
head -c 1000 /dev/urandom > "$work/mut-sdmf"
head -c 300000 /dev/urandom > "$work/mut-mdmf"

echo "== grid -> Tahoe" >&2
"$GRID" create-alias gr > /dev/null
"$GRID" mkdir --format mdmf gr:a > /dev/null
"$GRID" mkdir gr:a/b > /dev/null
"$GRID" upload "$work/in/big.bin" gr:a/b/c.bin > /dev/null
"$GRID" upload "$work/in/small.txt" gr:a/b/lit.txt > /dev/null
"$GRID" upload --mutable --format sdmf "$work/mut-sdmf" gr:a/mut-sdmf > /dev/null
"$GRID" upload --mutable --format mdmf "$work/mut-mdmf" gr:a/b/mut-mdmf > /dev/null
"$GRID" backup "$work/in" gr:bk > /dev/null
root=$("$GRID" list-aliases --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gr"]["readwrite"])')
"$GRID" manifest --storage-index gr: > "$work/gr.sis"
n=$(copy_tree "$work/gr.sis" "$work/grid/storage*/storage/shares" "${tahoe_disks[@]}")
ok "copied the shares of $n storage indexes (grid's tree) to Tahoe's servers"
tahoe add-alias gr "$root" > /dev/null
tahoe ls --json gr:a > "$work/t.json"
python3 - "$work/t.json" <<'PY' || fail "tahoe ls --json of grid's MDMF directory"
import json, sys
kind, d = json.load(open(sys.argv[1]))
assert kind == "dirnode" and d["mutable"] and d["rw_uri"].startswith("URI:DIR2-MDMF:"), d
kids = d["children"]
assert kids["b"][0] == "dirnode" and kids["b"][1]["rw_uri"].startswith("URI:DIR2:"), kids["b"]
assert kids["mut-sdmf"][0] == "filenode" and kids["mut-sdmf"][1]["format"] == "SDMF", kids["mut-sdmf"]
for k in kids.values(): assert "linkcrtime" in k[1]["metadata"]["tahoe"], k
PY
ok "tahoe ls --json lists grid's MDMF directory (children, formats, link times)"
[ "$(tahoe ls gr:a/b | tr '\n' ' ')" = "c.bin lit.txt mut-mdmf " ] || fail "tahoe ls gr:a/b: $(tahoe ls gr:a/b)"
ok "tahoe ls gr:a/b names every child"
tahoe get gr:a/b/c.bin "$work/out" 2>/dev/null; same "$work/in/big.bin" "$work/out" "tahoe get gr:a/b/c.bin (CHK in an SDMF dir in an MDMF dir)"
tahoe get gr:a/b/lit.txt "$work/out" 2>/dev/null; same "$work/in/small.txt" "$work/out" "tahoe get gr:a/b/lit.txt (LIT)"
tahoe get gr:a/mut-sdmf "$work/out" 2>/dev/null; same "$work/mut-sdmf" "$work/out" "tahoe get gr:a/mut-sdmf (SDMF file)"
tahoe get gr:a/b/mut-mdmf "$work/out" 2>/dev/null; same "$work/mut-mdmf" "$work/out" "tahoe get gr:a/b/mut-mdmf (MDMF file)"
tahoe get gr:bk/Latest/sub/deeper/mid.bin "$work/out" 2>/dev/null; same "$work/in/sub/deeper/mid.bin" "$work/out" "tahoe get through grid's backup (DIR2-CHK, three levels)"
tahoe ls --json gr:bk/Latest/sub/empty | grep -q '"dirnode"' || fail "tahoe ls of grid's empty immutable directory (DIR2-LIT)"
ok "tahoe ls of an empty immutable directory grid made (DIR2-LIT)"
report=$(tahoe deep-check --verify gr: 2>&1) || true
objects=$(wc -l < "$work/gr.sis")
grep -q "objects checked, .* healthy, 0 unhealthy" <<< "$report" || fail "tahoe deep-check --verify: $report"
ok "tahoe deep-check --verify of grid's tree: $report"

echo "== Tahoe -> grid" >&2
mkdir -p "$work/tin/one/two"
head -c 150000 /dev/urandom > "$work/tin/one/two/f1.bin"
head -c 40 /dev/urandom > "$work/tin/one/f2.bin"
head -c 9000 /dev/urandom > "$work/tin/f3.bin"
tahoe create-alias tt > /dev/null
tahoe mkdir tt:made/by/mkdir > /dev/null
tahoe cp -r "$work/tin" tt:tree > /dev/null
tahoe backup "$work/tin" tt:bk > /dev/null
troot=$(tahoe list-aliases --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tt"]["readwrite"])')
tahoe manifest --storage-index tt: > "$work/tt.sis"
n=$(copy_tree "$work/tt.sis" "$work/tahoe/storage*/storage/shares" "${grid_disks[@]}")
ok "copied the shares of $n storage indexes (Tahoe's tree) to grid's servers"
"$GRID" add-alias tt "$troot" > /dev/null
"$GRID" ls --json tt:tree/tin > "$work/g.json"
python3 - "$work/g.json" <<'PY' || fail "grid ls --json of Tahoe's directory"
import json, sys
kind, d = json.load(open(sys.argv[1]))
assert kind == "dirnode" and d["mutable"], d
kids = d["children"]
assert set(kids) == {"one", "f3.bin"}, kids
assert kids["f3.bin"][1]["size"] == 9000 and kids["f3.bin"][1]["format"] == "CHK", kids["f3.bin"]
PY
ok "grid ls --json lists Tahoe's cp -r directory"
[ "$("$GRID" ls tt:made/by | tr '\n' ' ')" = "mkdir " ] || fail "grid ls tt:made/by"
ok "grid ls of Tahoe's mkdir tree"
"$GRID" download tt:tree/tin/one/two/f1.bin -o "$work/out"; same "$work/tin/one/two/f1.bin" "$work/out" "grid download of Tahoe's tt:tree/tin/one/two/f1.bin"
"$GRID" download tt:tree/tin/one/f2.bin -o "$work/out"; same "$work/tin/one/f2.bin" "$work/out" "grid download of Tahoe's LIT tt:tree/tin/one/f2.bin"
"$GRID" download tt:bk/Latest/one/two/f1.bin -o "$work/out"; same "$work/tin/one/two/f1.bin" "$work/out" "grid download through Tahoe's backup (DIR2-CHK)"
"$GRID" restore tt:bk/Latest "$work/restored" > /dev/null
diff -r "$work/tin" "$work/restored" > /dev/null || fail "grid restore of Tahoe's backup differs"
ok "grid restore of Tahoe's backup: diff -r finds the trees identical"
"$GRID" deep-check --verify tt: > "$work/dc" || fail "grid deep-check --verify of Tahoe's tree: $(cat "$work/dc")"
ok "grid deep-check --verify of Tahoe's tree: $(tail -1 "$work/dc")"
# Changes by grid on Tahoe's directories (their shares keep the Tahoe servers' write enablers).
"$GRID" ln tt:tree/tin/f3.bin tt:tree/tin/f3-link.bin
"$GRID" mv tt:tree/tin/one/f2.bin tt:tree/tin/one/f2-renamed.bin
"$GRID" rm tt:tree/tin/one/two/f1.bin
ok "grid changed Tahoe's directories: ln, mv, rm"
"$GRID" manifest --storage-index tt:tree > "$work/tt2.sis"
copy_tree "$work/tt2.sis" "$work/grid/storage*/storage/shares" "${tahoe_disks[@]}" > /dev/null
[ "$(tahoe ls tt:tree/tin | tr '\n' ' ')" = "f3-link.bin f3.bin one " ] || fail "tahoe ls after grid ln: $(tahoe ls tt:tree/tin)"
ok "tahoe sees grid's ln"
[ "$(tahoe ls tt:tree/tin/one | tr '\n' ' ')" = "f2-renamed.bin two " ] || fail "tahoe ls after grid mv: $(tahoe ls tt:tree/tin/one)"
ok "tahoe sees grid's mv"
[ -z "$(tahoe ls tt:tree/tin/one/two)" ] || fail "tahoe ls after grid rm: $(tahoe ls tt:tree/tin/one/two)"
ok "tahoe sees grid's rm"
tahoe get tt:tree/tin/one/f2-renamed.bin "$work/out" 2>/dev/null; same "$work/tin/one/f2.bin" "$work/out" "tahoe get of the file grid renamed"
tahoe get tt:tree/tin/f3-link.bin "$work/out" 2>/dev/null; same "$work/tin/f3.bin" "$work/out" "tahoe get of the link grid added"
echo "all directory interop checks passed"
