#!/usr/bin/env bash
# Perplexity cost of the integer decode kernels: each model scored through the
# generation path (`eval --stepwise`: every token decoded alone through the KV cache) with fp32,
# int16 and int8 activations, first 2048 tokens of data/test.txt in windows of 512.
# Usage: scripts/kernel_perplexity.sh MODEL_DIR...   (needs a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LOWRA:-.build/release/lowra}
ppl='import json,sys; print("%.6g" % json.load(sys.stdin)["perplexity"])'
printf '| model | float | int16 | change | int8 | change |\n| --- | --- | --- | --- | --- | --- |\n'
for m in "$@"; do
    declare -A p=()
    for a in float int16 int8; do
        p[$a]=$("$L" eval --model "$m" --data data/test.txt --max-tokens 2048 --stepwise --activations "$a" \
            --json | python3 -c "$ppl")
    done
    change() { python3 -c "print('%+.3f%%' % (100 * ($1 / $2 - 1)))"; }
    echo "| $m | ${p[float]} | ${p[int16]} | $(change "${p[int16]}" "${p[float]}") | ${p[int8]} |" \
        "$(change "${p[int8]}" "${p[float]}") |"
done
