#!/usr/bin/env bash
# The decode benchmark in one run (a benchmark, not a test): SmolLM2 at 1.5 / 2 / 4 bits
# (quantized with --init none under runs/ when missing), the source GGUF, the same expanded to
# fp32, and llama.cpp's llama-bench on the source file and on the Q4_0 / Q2_K / Q8_0 files its
# llama-quantize makes from it. Usage: scripts/bench_decode.sh [ROUNDS]   (needs a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LOWRA:-.build/release/lowra}
SRC=models/SmolLM2-135M-Instruct.Q4_1.gguf
ROUNDS=${1:-5}
BENCH=$(scripts/build_llamacpp.sh)
QUANT=$(dirname "$BENCH")/llama-quantize
for b in 1.5 2 4; do
    [ -f "runs/bq$b/lowra_quant.json" ] ||
        "$L" quantize --model "$SRC" --bits "$b" --calibration none --init none --out "runs/bq$b" --json >/dev/null
done
for t in Q4_0 Q2_K Q8_0; do
    [ -f "runs/smollm2-$t.gguf" ] || "$QUANT" --allow-requantize "$SRC" "runs/smollm2-$t.gguf" "$t" 2 >/dev/null 2>&1
done
"$L" bench decode --model runs/bq1.5 --model runs/bq2 --model runs/bq4 --model "$SRC" --fp32 "$SRC" \
    --rounds "$ROUNDS" --llama-bench "$BENCH" --gguf "$SRC" --gguf runs/smollm2-Q4_0.gguf \
    --gguf runs/smollm2-Q2_K.gguf --gguf runs/smollm2-Q8_0.gguf
rate='import json,sys; m=json.load(sys.stdin)["models"][0]; print("decode %.1f tok/s" % m["decode_tokens_per_s"])'
for k in avx2 scalar; do
    r=$(LOWRA_KERNEL=$k "$L" bench decode --model runs/bq2 --rounds 1 --decode 64 --prefill 128 --json |
        python3 -c "$rate")
    echo "LOWRA_KERNEL=$k: $r"
done
