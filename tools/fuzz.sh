#!/usr/bin/env bash
# Fuzzes the storage and introducer services for as long as asked, then prints the line
# coverage it reached in the code that parses and serves requests.
#
#   tools/fuzz.sh [SECONDS] [SEED]     # default 60 s, seed 20261122
#
# The fuzzer is Tests/GridFuzzTests (structure-aware: typed requests of every method with
# offsets and lengths near 2^64, 2^63, 2^32, huge and empty vectors, edge share numbers,
# then damaged bytes; straight to every message decoder, the frame parser and the SDMF and
# MDMF share parsers and checkers, the directory unpacker, entry decoder and JSON parser too),
# and the HTTP parser (generated and damaged requests, whole and split) for as long again.
# The test suite runs 20,000 service requests and 15,000 HTTP ones; a trap anywhere fails the run. Builds with
# coverage into .build-fuzz/ (kept apart from the normal build).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
seed=${2:-20261122}
tools/deps.sh
scratch=.build-fuzz
swift build --build-tests --enable-code-coverage --scratch-path "$scratch" >&2
codecov=$(swift test --scratch-path "$scratch" --show-codecov-path 2>/dev/null | xargs dirname)
rm -rf "$codecov"
GRID_FUZZ_SECONDS=$seconds GRID_FUZZ_SEED=$seed \
  swift test --skip-build --enable-code-coverage --scratch-path "$scratch" --disable-swift-testing \
  --filter 'ServiceFuzzTests|HTTPFuzzTests' 2>&1 | grep -E "fuzz:|error|Executed .* test" || true
bin=$(find "$scratch" -name 'gridPackageTests.xctest' -type f | head -1)
echo "line coverage of the request-handling code after this run:"
"$(dirname "$(readlink -f "$(command -v swift)")")/llvm-cov" report "$bin" -instr-profile="$codecov/default.profdata" \
  Sources/GridStorage Sources/GridProtocol Sources/GridIntroducer/Introducer.swift \
  Sources/GridWire/WireCoding.swift Sources/GridWire/Frame.swift \
  Sources/GridFormat/SDMFShare.swift Sources/GridFormat/MDMFShare.swift Sources/GridMutable Sources/GridDirectory \
  Sources/GridFormat/AnyCapability.swift Sources/GridFormat/DirectoryCapability.swift Sources/GridHTTP/HTTPParser.swift 2>/dev/null \
  | awk '/Sources|GridStorage|GridProtocol|GridIntroducer|GridWire|GridFormat|GridMutable|GridDirectory|GridHTTP|TOTAL/ { printf "  %-40s %5s lines, %4s missed, %s covered\n", $1, $8, $9, $10 }' \
  | sed 's|.*/Sources/|Sources/|'
