#!/usr/bin/env bash
# Discrete code refinement with and without block reconstruction, by the 40-step protocol (SmolLM2,
# 2 bits, rank 16): the test perplexity of the base alone, with its initial adapter, and after
# fine-tuning from it. Usage: scripts/refine_reconstruct.sh   (OUT=runs/rc; about 25 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LOWRA:-.build/release/lowra}
OUT=${OUT:-runs/rc}
mkdir -p "$OUT"
E=(--data data/test.txt --max-tokens 4096 --context 256 --json)
ppl() { "$L" eval "$@" "${E[@]}" 2>/dev/null | python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['perplexity'])"; }
for refine in 2 0; do
    d=$OUT/q$refine
    [ -f "$d/lowra_quant.json" ] || "$L" quantize --model models/SmolLM2-135M-Instruct.Q4_1.gguf --bits 2 --rank 16 \
        --refine-codes "$refine" --out "$d" >"$d.quantize.log" 2>&1
    [ -f "$d-r/lowra_quant.json" ] || "$L" reconstruct --model "$d" --out "$d-r" >"$d-r.log" 2>&1
    for m in "$d" "$d-r"; do
        rm -rf "$m-ft"
        "$L" finetune --model "$m" --train data/train.txt --valid data/valid.txt --steps 40 --batch 2 --seq 256 \
            --rank 16 --lr 1e-3 --out "$m-ft" >"$m-ft.log" 2>&1
        echo "$m | base $(ppl --model "$m" --no-adapter) | before $(ppl --model "$m") | after $(ppl --model "$m" --adapter "$m-ft")"
    done
done
