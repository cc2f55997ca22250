#!/usr/bin/env bash
# Quantizes SmolLM2 at several budgets and configurations and prints a markdown table of
# achieved bits, file size and perplexity (first 4096 tokens of data/valid.txt, windows of 512).
# Usage: scripts/quant_sweep.sh [OUTDIR]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=.build/release/lowra
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=${1:-runs/sweep}
mkdir -p "$OUT"
ppl() { $LOWRA eval --model "$1" --data data/valid.txt --max-tokens 4096 --context 512 --json 2>/dev/null | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"])'; }
row() {  # name, bits, extra args...
  local name=$1 bits=$2; shift 2
  local dir="$OUT/$name-$bits"
  local js; js=$($LOWRA quantize --model "$MODEL" --bits "$bits" --out "$dir" --json "$@" 2>/dev/null)
  local size; size=$(stat -c %s "$dir/model.safetensors")
  echo "$js" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("| %s | %s | %.4f | %.4f | %.3g | %.1f |" % (sys.argv[1], sys.argv[2], r["code_bits_per_param"], r["stored_bits_per_param"], r["total_squared_error"], r["seconds"]), end="")' "$name" "$bits"
  echo " $((size / 1000000)) | $(ppl "$dir") |"
}
echo "| config | target bits | code bits/param | stored bits/param | total sq. error | quantize s | file MB | valid ppl |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
echo "| fp32 reference (GGUF) | — | — | — | 0 | — | 98 | $(ppl "$MODEL") |"
for b in 4 3 2.5 2.25 2 1.75 1.5; do row lowra "$b"; done
for b in 4 3 2.5 2; do row qlora "$b" --method qlora; done
for b in 2.5 1.75; do
  row lowra-channel "$b" --codebook channel
  row lowra-absmax2 "$b" --weighting absmax2
  row lowra-nf-levels "$b" --lloyd-iters 0
done
