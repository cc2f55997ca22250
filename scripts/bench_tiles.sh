#!/usr/bin/env bash
# What a tiled product costs per code width (scripts/bench_tiles.c): ns per 16-row tile and 64-input
# block for 1, 2 and 4-bit rows, 1, 2 and 16 columns, int16 and int8 activations, built as the package
# builds its C (the Swift toolchain's clang, -O3). A benchmark, not a test.
#
#   scripts/bench_tiles.sh [avx512|avx2] [INPUTS]     (default: avx512, 576 inputs: SmolLM2's width)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build/bench-tiles
mkdir -p "$out"
CC=${CC:-$(command -v /opt/swift/usr/bin/clang || command -v clang || echo cc)}
"$CC" -O3 -std=gnu11 -I Sources/CLowRAPacked/include -I Sources/CLowRAPacked \
  Sources/CLowRAPacked/*.c Sources/CLowRAPacked/arch/*/*.c scripts/bench_tiles.c -lm -lpthread -o "$out/bench_tiles"
"$out/bench_tiles" "${1:-avx512}" "${2:-576}"
