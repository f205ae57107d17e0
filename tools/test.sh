#!/usr/bin/env bash
# The test command: installs missing system libraries, then builds and runs every test.
# All tests run in a debug build; the byte crunching is in C kernels built with -O3 and
# in OpenSSL, so the Tahoe vector tests take seconds, not minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The suites are XCTest; --disable-swift-testing skips the empty Swift Testing pass.
status=0
swift test --skip-build --disable-swift-testing "$@" 2>&1 | tee "$log" || status=$?
summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1 || true)
if [ -n "$summary" ]; then
  total=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
  failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
  echo "tests: $((total - failed)) passed, $failed failed"
fi
exit $status
