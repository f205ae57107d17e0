#!/usr/bin/env bash
# Takes the screenshot of the gateway's status page shown in docs/ and the README: a
# local grid of 10 servers, a gateway, a few uploads and downloads (one large upload
# still in progress), then headless Chromium.
#
#   tools/status-screenshot.sh [OUT=docs/status-page.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/status-page.png}
command -v chromium >/dev/null || { echo "needs chromium (apt-get install chromium)" >&2; exit 69; }
tools/deps.sh
swift build -c release --product grid --static-swift-stdlib >&2
GRID=$PWD/.build/release/grid
work=$(mktemp -d "${TMPDIR:-/tmp}/status-shot.XXXXXX")
trap 'kill $gw 2>/dev/null || true; "$GRID" local-grid stop --dir "$work/grid" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$GRID" local-grid start --dir "$work/grid" --servers 10 >&2
node=$work/grid/client
"$GRID" gateway --node-dir "$node" --listen 127.0.0.1:0 > "$work/gw.log" 2>&1 &
gw=$!
for _ in $(seq 100); do [ -s "$node/node.url" ] && break; sleep 0.1; done
url=$(cat "$node/node.url")
sleep 3
head -c $((8 << 20)) /dev/urandom > "$work/photos.tar"
cap=$(curl -s -T "$work/photos.tar" "${url}uri")
curl -s -o /dev/null "${url}uri/$cap"
printf 'notes\n' | curl -s -T - "${url}uri" > /dev/null
curl -s -T "$work/photos.tar" "${url}uri?format=MDMF" > /dev/null
head -c $((1 << 30)) /dev/zero > "$work/big.img"
curl -s -T "$work/big.img" --limit-rate 40M "${url}uri" > /dev/null &
sleep 4
chromium --headless --no-sandbox --disable-gpu --user-data-dir="$work/chromium" --hide-scrollbars \
  --window-size=1280,1000 --screenshot="$PWD/$out" "$url" 2>/dev/null
echo "wrote $out"
