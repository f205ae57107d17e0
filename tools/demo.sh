#!/usr/bin/env bash
# The main job: builds grid (release), then `grid demo` starts an introducer and 10
# storage servers on 127.0.0.1 in a temporary directory, uploads a 32 MiB sample file,
# downloads it, checks every byte, uploads it again (deduplicated), prints the
# capability, where each share landed and the throughput, and stops everything.
# Extra arguments go to `grid demo` (e.g. --size 256MiB --servers 12 --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
swift build -c release --product grid --static-swift-stdlib >&2
exec .build/release/grid demo "$@"
