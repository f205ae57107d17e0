#!/usr/bin/env bash
# The stock tahoe 1.20 CLI, unchanged, against grid's web gateway and against a real
# Tahoe-LAFS node, in one run. Each step runs the same tahoe command on both sides and
# compares what a user sees: exit codes, the bytes read back, and for immutable files the
# capability itself (both clients use one convergence secret and 3-of-7-of-10).
#
#   tools/tahoe-cli-vs-gateway.sh            # every step; prints "N passed, M failed"
#   SMALL=1 tools/tahoe-cli-vs-gateway.sh    # 100 files instead of 1,000, no 128 MiB file
#
# grid's side is a Tahoe node directory holding only node.url (written by `grid gateway`)
# and an empty private/ (aliases and the backup database are the CLI's own files).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/tahoe-side.sh
start_both_grids tahoe-cli
TT=$work/tahoe/client                # Tahoe's own client node
GT=$work/gateway-node; mkdir -p "$GT/private"
# One convergence secret on both sides (Tahoe's comes from TAHOE_CONVERGENCE_HEX).
"$TAHOE_VENV/bin/python" -c 'import sys; from allmydata.util import base32; print(base32.b2a(bytes.fromhex(sys.argv[1])).decode())' \
  "${TAHOE_CONVERGENCE_HEX:-000102030405060708090a0b0c0d0e0f}" > "$GRID_NODE_DIR/private/convergence"
"$GRID" gateway --node-dir "$GRID_NODE_DIR" --listen 127.0.0.1:0 > "$work/gateway.log" 2>&1 &
GWPID=$!
trap 'kill $GWPID 2>/dev/null || true; "$REF/stop-grid.sh" "$work/tahoe" >/dev/null 2>&1 || true; "$GRID" local-grid stop --dir "$work/grid" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$GRID_NODE_DIR/node.url" ] && break; sleep 0.1; done
cp "$GRID_NODE_DIR/node.url" "$GT/node.url"
for _ in $(seq 100); do
  n=$(curl -s "$(cat "$GT/node.url")?t=json" | "$TAHOE_VENV/bin/python" -c 'import json,sys; print(sum(s["connection_status"].startswith("Connected") for s in json.load(sys.stdin)["servers"]))' 2>/dev/null || echo 0)
  [ "$n" -ge 10 ] && break; sleep 0.2
done
echo "gateway $(cat "$GT/node.url") sees $n servers; Tahoe's node $WEB" >&2
T="$TAHOE_VENV/bin/tahoe"
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok    $*"; }
bad() { fail=$((fail + 1)); echo "FAIL  $*"; }

# side NAME CMD...: runs `tahoe -d NODE CMD` for Tahoe (t) and grid (g); @ in an argument
# becomes that side's local scratch directory. Leaves rc_t rc_g out_t out_g and times.
side() {
  local name=$1; shift
  local a=() b=() x
  for x in "$@"; do a+=("${x//@/$work/t}"); b+=("${x//@/$work/g}"); done
  local t0=$(date +%s.%N)
  set +e
  out_t=$("$T" -d "$TT" "${a[@]}" 2>"$work/err_t"); rc_t=$?
  local t1=$(date +%s.%N)
  out_g=$("$T" -d "$GT" "${b[@]}" 2>"$work/err_g"); rc_g=$?
  local t2=$(date +%s.%N)
  set -e
  secs_t=$(echo "$t1 - $t0" | bc); secs_g=$(echo "$t2 - $t1" | bc)
  if [ "$rc_t" = "$rc_g" ]; then ok "$name: exit $rc_t on both (Tahoe ${secs_t}s, grid ${secs_g}s)"
  else bad "$name: exit $rc_t on Tahoe, $rc_g through grid's gateway: $(head -c 300 "$work/err_g")"; fi
}
same() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: Tahoe '$(echo "$2" | head -c 200)' vs grid '$(echo "$3" | head -c 200)'"; fi; }

mkdir -p "$work/t" "$work/g" "$work/data"
printf 'a literal file\n' > "$work/data/lit"
head -c 1024 /dev/urandom > "$work/data/1k"
head -c $((16 << 20)) /dev/urandom > "$work/data/16m"
sizes="lit 1k 16m"
if [ -z "${SMALL:-}" ]; then head -c $((128 << 20)) /dev/urandom > "$work/data/128m"; sizes="$sizes 128m"; fi

for f in $sizes; do
  side "put $f" put "$work/data/$f"
  same "put $f: the same capability" "$out_t" "$out_g"
  cap=$out_g
  side "get $f" get "$cap" "@/$f"
  cmp -s "$work/t/$f" "$work/data/$f" && cmp -s "$work/g/$f" "$work/data/$f" && ok "get $f: the same bytes" || bad "get $f: bytes differ"
done
side "put --mutable --format=MDMF" put --mutable --format=MDMF "$work/data/1k"
mcap_t=$out_t; mcap_g=$out_g
case "$mcap_g" in URI:MDMF:*) ok "put --mutable: an MDMF write capability";; *) bad "put --mutable gave '$mcap_g'";; esac
set +e; "$T" -d "$TT" get "$mcap_t" "$work/t/m"; "$T" -d "$GT" get "$mcap_g" "$work/g/m"; set -e
cmp -s "$work/t/m" "$work/data/1k" && cmp -s "$work/g/m" "$work/data/1k" && ok "get MDMF: the same bytes" || bad "get MDMF"

# A tree of small files in 20 directories, copied in and out.
nfiles=1000; [ -n "${SMALL:-}" ] && nfiles=100
mkdir -p "$work/tree"
for i in $(seq 0 $((nfiles - 1))); do
  d=$work/tree/d$((i % 20)); mkdir -p "$d"; head -c $((i * 37 % 3000 + 1)) /dev/urandom > "$d/f$i"
done
side "create-alias" create-alias a
side "mkdir" mkdir a:d1
side "cp -r of $nfiles files in" cp -r "$work/tree" a:tree
side "cp -r out" cp -r a:tree "@/out"
# Tahoe's cp -r puts a directory inside the target: a:tree/tree/..., and out/tree/tree/...
treesame() { diff -r "$1" "$2/tree/tree" >/dev/null 2>&1; }
if treesame "$work/tree" "$work/t/out" && treesame "$work/tree" "$work/g/out"; then ok "cp -r out: diff -r identical on both"; else bad "cp -r out: trees differ"; fi
side "ls -l" ls -l a:tree/tree/d3
same "ls -l: the same names and sizes" "$(echo "$out_t" | awk '{print $2, $NF}' | sort)" "$(echo "$out_g" | awk '{print $2, $NF}' | sort)"
side "mv" mv a:tree/tree/d0/f0 a:tree/moved
side "unlink" unlink a:tree/moved
side "ls after mv and unlink" ls a:tree/tree/d0
same "ls after mv and unlink: the same names" "$out_t" "$out_g"
side "backup (first)" backup "$work/tree" a:bk
side "backup (second)" backup "$work/tree" a:bk
same "backup (second): nothing uploaded" "$(echo "$out_t" | grep -o '0 files uploaded' || true)" "$(echo "$out_g" | grep -o '0 files uploaded' || true)"
[ -n "$(echo "$out_g" | grep -o '0 files uploaded')" ] && ok "backup (second): '$(echo "$out_g" | tail -1)'" || bad "backup (second) uploaded again: $out_g"
side "manifest" manifest a:
same "manifest: as many objects" "$(echo "$out_t" | wc -l)" "$(echo "$out_g" | wc -l)"
side "deep-check --verify" deep-check --verify a:tree
same "deep-check --verify: the same verdict" "$(echo "$out_t" | tail -1)" "$(echo "$out_g" | tail -1)"
side "stats" stats a:tree
same "stats: the same counts" "$(echo "$out_t" | grep count- | sort)" "$(echo "$out_g" | grep count- | sort)"

# check --repair after deleting 4 of a file's 10 shares from each side's servers.
side "put for repair" put "$work/data/16m"
rcap=$out_g
same "put for repair: the same capability" "$out_t" "$out_g"
si=$("$TAHOE_VENV/bin/python" -c 'import sys; from allmydata import uri; from allmydata.util import base32; print(base32.b2a(uri.from_string(sys.argv[1]).get_storage_index()).decode())' "$rcap")
for side_dir in "$work/tahoe" "$work/grid"; do
  removed=0
  for s in "$side_dir"/storage*; do
    for f in "$s"/storage/shares/${si:0:2}/$si/*; do
      [ -e "$f" ] && [ $removed -lt 4 ] && { rm "$f"; removed=$((removed + 1)); }
    done
  done
done
side "check --repair" check --repair "$rcap"
same "check --repair: the same report" "$(echo "$out_t" | grep -E 'Summary|good-shares|repair')" "$(echo "$out_g" | grep -E 'Summary|good-shares|repair')"
side "check after repair" check "$rcap"
same "check after repair: healthy on both" "$(echo "$out_t" | head -1)" "$(echo "$out_g" | head -1)"

echo
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
