#!/usr/bin/env bash
# Eval and training throughput of a packed model against the fp32 runtime on the same
# weights, alternating in one run (a benchmark, not a test). Usage: scripts/bench_prefill_train.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LOWRA:-.build/release/lowra}
SRC=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f runs/bq2/lowra_quant.json ] ||
    "$L" quantize --model "$SRC" --bits 2 --calibration none --init none --out runs/bq2 --json >/dev/null
step='import json,sys; d=json.load(sys.stdin)
print("step %.3f s, %.1f tok/s" % (d["step_seconds"], d["tokens_per_s"]))'
for round in $(seq "${1:-2}"); do
    for m in "--model runs/bq2" "--model $SRC --fp32"; do
        # shellcheck disable=SC2086
        eval_line=$("$L" eval $m --data data/test.txt --max-tokens 4096 --context 512 2>&1 | tail -1)
        # shellcheck disable=SC2086
        train=$("$L" bench train $m --steps 2 --json 2>/dev/null | python3 -c "$step")
        echo "round $round | $m | eval: $eval_line | train (batch 4 x 256, rank 16): $train"
    done
done
