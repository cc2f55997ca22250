#!/usr/bin/env bash
# Continual updates and forgetting (docs/results/serving.md): an adapter trained on text A (Tiny
# Shakespeare), continued on text B (the fortunes) into version 2 with `finetune --from`, then
# `card promote`, which runs the parent's task evaluation (Shakespeare validation) with both versions
# and refuses version 2 if its perplexity rose by more than 5%. Prints both perplexities.
#
#   scripts/continual_demo.sh [OUT=runs/continual] [STEPS=40]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/continual} steps=${2:-40}
L=${LOWRA:-.build/release/lowra}
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$out"
head -c 380000 data/fortunes.txt > "$out/fortunes-train.txt"
tail -c 40000 data/fortunes.txt > "$out/fortunes-valid.txt"
[ -d "$out/q2" ] || $L quantize --model $M --bits 2 --rank 16 --calibration none --out "$out/q2"
common=(--model "$out/q2" --steps "$steps" --batch 4 --seq 128 --lr 1e-3 --valid-sequences 16)
rm -rf "$out/shelf"
$L finetune "${common[@]}" --train data/train.txt --valid data/valid.txt --out "$out/shelf/bard"
$L finetune "${common[@]}" --train "$out/fortunes-train.txt" --valid "$out/fortunes-valid.txt" \
  --from "$out/shelf/bard" --out "$out/shelf/bard-2"
$L card show "$out/shelf/bard-2" | head -12
$L card promote "$out/shelf/bard-2" && echo "promoted" || echo "refused (the check above says why)"
