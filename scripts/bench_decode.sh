#!/usr/bin/env bash
# Decode tokens/s of SmolLM2 at 1.5 / 2 / 4 bits and of the source GGUF, three alternating rounds
# in one run (a benchmark, not a test), then the 2-bit model on the slower kernel paths.
# Quantized directories (--init none) are made under runs/ when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LOWRA:-.build/release/lowra}
SRC=models/SmolLM2-135M-Instruct.Q4_1.gguf
for b in 1.5 2 4; do
    [ -f "runs/bq$b/lowra_quant.json" ] ||
        "$L" quantize --model "$SRC" --bits "$b" --init none --out "runs/bq$b" --json >/dev/null
done
for round in 1 2 3; do
    for m in runs/bq1.5 runs/bq2 runs/bq4 "$SRC"; do
        stats=$("$L" generate --model "$m" --prompt "ROMEO:" --max-new-tokens 128 --temperature 0 2>&1 >/dev/null |
            tail -1)
        echo "$round $m $stats"
    done
done
for k in avx2 scalar; do
    stats=$(LOWRA_KERNEL=$k "$L" generate --model runs/bq2 --prompt "ROMEO:" --max-new-tokens 32 --temperature 0 \
        2>&1 >/dev/null | tail -1)
    echo "LOWRA_KERNEL=$k runs/bq2 $stats"
done
