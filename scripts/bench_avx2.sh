#!/usr/bin/env bash
# The AVX2 path against the AVX-512 one and against an AVX2-only llama.cpp, in one run (a benchmark, not a
# test): SmolLM2 at 1.5 / 2 / 4 bits (--calibration none --init none, made under runs/ when missing)
# decoded on both paths in alternating rounds (`lowra bench decode --path avx2,avx512`), llama.cpp's
# llama-bench built for AVX2 only (LLAMACPP_ARCH=avx2 scripts/build_llamacpp.sh) on the source GGUF and
# the Q4_0 / Q2_K files its llama-quantize makes, then 1 and 16 streams on the AVX2 path (`lowra bench
# batch`). Usage: scripts/bench_avx2.sh [ROUNDS]   (needs a release build; an x86-64 CPU with AVX-512
# for the side-by-side rows)
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LOWRA:-.build/release/lowra}
SRC=models/SmolLM2-135M-Instruct.Q4_1.gguf
ROUNDS=${1:-5}
BENCH=$(LLAMACPP_ARCH=avx2 scripts/build_llamacpp.sh)
QUANT=$(dirname "$BENCH")/llama-quantize
for b in 1.5 2 4; do
    [ -f "runs/bq$b/lowra_quant.json" ] ||
        "$L" quantize --model "$SRC" --bits "$b" --calibration none --init none --out "runs/bq$b" --json >/dev/null
done
for t in Q4_0 Q2_K; do
    [ -f "runs/smollm2-$t.gguf" ] || "$QUANT" --allow-requantize "$SRC" "runs/smollm2-$t.gguf" "$t" 2 >/dev/null 2>&1
done
"$L" bench decode --model runs/bq1.5 --model runs/bq2 --model runs/bq4 --path avx2,avx512 --rounds "$ROUNDS" \
    --prefill 64 --llama-bench "$BENCH" --gguf "$SRC" --gguf runs/smollm2-Q4_0.gguf --gguf runs/smollm2-Q2_K.gguf
LOWRA_KERNEL=avx2 "$L" bench batch --model runs/bq2 --rows 1,16 --adapters 4
