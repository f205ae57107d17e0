#!/usr/bin/env bash
# The web gateway's speed and memory, side by side in one run:
#   1. 128 MiB up and down: curl through `grid gateway` against `grid upload` / `grid
#      download` of the same kind of file (fresh random files, so every upload pushes
#      every share), ROUNDS rounds interleaved; medians and the ratio.
#   2. 1,000 PUTs of 4 KiB on one keep-alive connection (Python's http.client): grid's
#      gateway against Tahoe-LAFS 1.20's web API, requests per second.
#   3. The gateway's peak RSS (VmHWM) after a 1 GiB PUT and a 1 GiB GET (GIB=0 skips).
#
#   tools/bench-gateway.sh [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
source tools/tahoe-side.sh
start_both_grids bench-gateway
"$GRID" gateway --node-dir "$GRID_NODE_DIR" --listen 127.0.0.1:0 > "$work/gateway.log" 2>&1 &
GWPID=$!
trap 'kill $GWPID 2>/dev/null || true; "$REF/stop-grid.sh" "$work/tahoe" >/dev/null 2>&1 || true; "$GRID" local-grid stop --dir "$work/grid" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$GRID_NODE_DIR/node.url" ] && break; sleep 0.1; done
URL=$(cat "$GRID_NODE_DIR/node.url")
PY="$TAHOE_VENV/bin/python"
for _ in $(seq 100); do
  n=$(curl -s "${URL}?t=json" | "$PY" -c 'import json,sys; print(sum(s["connection_status"].startswith("Connected") for s in json.load(sys.stdin)["servers"]))' 2>/dev/null || echo 0)
  [ "$n" -ge 10 ] && break; sleep 0.2
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); CPU features: $(grep -o -w 'gfni\|avx512f\|avx2\|sha_ni\|vaes' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "gateway $URL, $n servers connected"
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
size=$((128 << 20))
: > "$work/cli_up"; : > "$work/gw_up"; : > "$work/cli_down"; : > "$work/gw_down"
for r in $(seq "$rounds"); do
  head -c $size /dev/urandom > "$work/a.bin"; head -c $size /dev/urandom > "$work/b.bin"
  # Alternate which goes first: the second upload of a pair runs while the servers
  # still write back the first one's shares.
  if [ $((r % 2)) = 1 ]; then
    t0=$(now); cap=$("$GRID" upload "$work/a.bin" | tail -1); t1=$(now)
    gcap=$(curl -s -T "$work/b.bin" "${URL}uri"); t2=$(now)
    echo "$t1 - $t0" | bc >> "$work/cli_up"; echo "$t2 - $t1" | bc >> "$work/gw_up"
  else
    t0=$(now); gcap=$(curl -s -T "$work/b.bin" "${URL}uri"); t1=$(now)
    cap=$("$GRID" upload "$work/a.bin" | tail -1); t2=$(now)
    echo "$t1 - $t0" | bc >> "$work/gw_up"; echo "$t2 - $t1" | bc >> "$work/cli_up"
  fi
  t0=$(now); "$GRID" download "$cap" -o "$work/a.out"; t1=$(now)
  curl -s -o "$work/b.out" "${URL}uri/$gcap"; t2=$(now)
  echo "$t1 - $t0" | bc >> "$work/cli_down"; echo "$t2 - $t1" | bc >> "$work/gw_down"
  cmp -s "$work/a.bin" "$work/a.out" && cmp -s "$work/b.bin" "$work/b.out" || { echo "bytes differ in round $r" >&2; exit 1; }
  rm -f "$work"/*.out
done
mbps() { echo "scale=1; 134.217728 / $1" | bc; }
cu=$(median < "$work/cli_up"); gu=$(median < "$work/gw_up"); cd_=$(median < "$work/cli_down"); gd=$(median < "$work/gw_down")
echo
echo "128 MiB, $rounds rounds, medians (s):"
printf "  upload:   grid upload %6.2f s (%s MB/s)   curl -T through the gateway %6.2f s (%s MB/s)   gateway/CLI throughput %.2fx\n" \
  "$cu" "$(mbps "$cu")" "$gu" "$(mbps "$gu")" "$(echo "$cu / $gu" | bc -l)"
printf "  download: grid download -o %6.2f s (%s MB/s)   curl through the gateway %6.2f s (%s MB/s)   gateway/CLI throughput %.2fx\n" \
  "$cd_" "$(mbps "$cd_")" "$gd" "$(mbps "$gd")" "$(echo "$cd_ / $gd" | bc -l)"

cat > "$work/puts.py" <<'PY'
import http.client, os, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); n = int(sys.argv[2])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
t0 = time.time()
for i in range(n):
    c.request("PUT", "/uri", body=os.urandom(4096), headers={"Connection": "keep-alive"})
    r = c.getresponse(); body = r.read()
    assert r.status == 200 and body.startswith(b"URI:CHK:"), (r.status, body[:200])
print("%.1f" % (n / (time.time() - t0)))
PY
g=$("$PY" "$work/puts.py" "$URL" 1000)
t=$("$PY" "$work/puts.py" "$WEB/" 1000)
echo
echo "1,000 PUTs of 4 KiB on one keep-alive connection: grid gateway $g/s, Tahoe 1.20 web API $t/s ($(echo "scale=1; $g / $t" | bc)x)"

if [ "${GIB:-1}" != 0 ]; then
  head -c $((1 << 30)) /dev/urandom > "$work/g.bin"
  gcap=$(curl -s -T "$work/g.bin" "${URL}uri")
  put_rss=$(awk '/VmHWM/ {print $2}' /proc/$GWPID/status)
  curl -s "${URL}uri/$gcap" | cmp - "$work/g.bin" && same=identical || same=DIFFERENT
  get_rss=$(awk '/VmHWM/ {print $2}' /proc/$GWPID/status)
  echo
  echo "1 GiB through the gateway: peak RSS (VmHWM, the whole run so far) after the PUT $((put_rss / 1024)) MiB, after the GET $((get_rss / 1024)) MiB (bytes $same)"
  grep -E "upload of" "$work/gateway.log" | tail -3 | sed 's/^/  gateway log: /' 
fi
