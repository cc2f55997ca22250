#!/usr/bin/env bash
# The demo: the main job end to end on SmolLM2-135M. Quantize to 1.75 code bits/param with LowRA's
# default recipe (calibrated on data/calibration.txt, CLoQ-initialized adapter), fine-tune the
# adapter on the Tiny Shakespeare train split for a short run, report validation perplexity
# before and after, and generate a sample.
# Run through `make demo`, which sets up and builds first. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=.build/release/lowra
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
Q=runs/demo-q175
ADAPTER=runs/demo-adapter
STEPS=${DEMO_STEPS:-60}
EVAL="--data data/valid.txt --max-tokens 4096 --context 256"

echo "== the unquantized model (fp32 weights from the GGUF): validation perplexity"
$LOWRA eval --model "$MODEL" $EVAL
echo
echo "== quantize to 1.75 code bits/param (LowRA's default: calibrated, Fisher-weighted, CLoQ rank-16 adapter)"
rm -rf "$Q" "$ADAPTER"
$LOWRA quantize --model "$MODEL" --bits 1.75 --rank 16 --out "$Q" | tail -5
echo
echo "== before fine-tuning: the packed base alone, then with its CLoQ adapter"
$LOWRA eval --model "$Q" $EVAL --no-adapter
$LOWRA eval --model "$Q" $EVAL
echo
echo "== fine-tune the adapter: $STEPS steps of 2 x 256 tokens from data/train.txt"
$LOWRA finetune --model "$Q" --train data/train.txt --valid data/valid.txt --out "$ADAPTER" \
    --steps "$STEPS" --batch 2 --seq 256 --lr 1e-3 --valid-sequences 8
echo
echo "== after fine-tuning"
$LOWRA eval --model "$Q" $EVAL --adapter "$ADAPTER"
echo
echo "== a sample from the 1.75-bit model with its fine-tuned adapter"
$LOWRA generate --model "$Q" --adapter "$ADAPTER" --prompt "ROMEO:" --temperature 0.8 --top-k 40 --seed 7 --max-new-tokens 80
