#!/usr/bin/env bash
# The demo: load SmolLM2-135M, report perplexity on the Tiny Shakespeare test split, answer a
# chat prompt. Run through `make demo`, which sets up and builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=.build/release/lowra
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf

echo "== lowra inspect (summary)"
$LOWRA inspect --model "$MODEL" | awk "NR<=6"
echo
echo "== perplexity on data/test.txt (first 4096 tokens, windows of 512)"
$LOWRA eval --model "$MODEL" --data data/test.txt --max-tokens 4096 --context 512
echo
echo "== chat: What is the capital of France?"
$LOWRA generate --model "$MODEL" --chat --prompt "What is the capital of France?" --temperature 0 --max-new-tokens 64
echo
echo "== chat: Write a two-line poem about the sea."
$LOWRA generate --model "$MODEL" --chat --prompt "Write a two-line poem about the sea." --temperature 0.7 --top-p 0.9 --seed 1 --max-new-tokens 64
echo
echo "== quantize to 2.5 code bits/param (LowRA, calibrated on a generic text), then evaluate against the original"
$LOWRA quantize --model "$MODEL" --bits 2.5 --calibration /usr/share/common-licenses/GPL-3 --out runs/demo-q25 | tail -4
$LOWRA eval --model runs/demo-q25 --data data/test.txt --max-tokens 2048 --context 512 --reference "$MODEL"
$LOWRA generate --model runs/demo-q25 --chat --prompt "What is the capital of France?" --temperature 0 --max-new-tokens 40
