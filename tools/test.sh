#!/usr/bin/env bash
# The test command: installs missing system libraries, then builds and runs every test.
# All tests run in a debug build; the byte crunching is in C kernels built with -O3 and
# in OpenSSL, so the Tahoe vector tests take seconds, not minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
swift build --build-tests
swift test --skip-build "$@"
