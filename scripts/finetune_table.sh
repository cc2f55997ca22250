#!/usr/bin/env bash
# The fine-tuning measurements on SmolLM2 (and on Qwen2.5-Coder-0.5B): for each budget,
# quantize with LoftQ (rank 16) and with zero init, evaluate before training, fine-tune the LoftQ
# adapter, evaluate after. Prints a markdown table; $OUT keeps the models, adapters and logs.
# About 20 minutes per budget on SmolLM2.
# Usage: [MODEL=…] [OUT=…] [STEPS=200] [EVAL_TOKENS=8192] scripts/finetune_table.sh [BITS...]   (default: 2 1.5)
#   e.g. MODEL=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf OUT=runs/ft-qwen STEPS=100 EVAL_TOKENS=4096 \
#        scripts/finetune_table.sh 2
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=.build/release/lowra
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-runs/ft-table}
STEPS=${STEPS:-200}
EVAL_TOKENS=${EVAL_TOKENS:-8192}
BUDGETS=("$@")
[ ${#BUDGETS[@]} -eq 0 ] && BUDGETS=(2 1.5)
EVAL=(--data data/valid.txt --max-tokens "$EVAL_TOKENS" --context 256 --json)
mkdir -p "$OUT"
ppl() { python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"])'; }

FP=$($LOWRA eval --model "$MODEL" "${EVAL[@]}" | ppl)
ROWS=()
for B in "${BUDGETS[@]}"; do
    Q=$OUT/q$B; QZ=$OUT/q$B-zeros; A=$OUT/ft$B
    # The paper's data-free recipe.
    [ -f "$Q/lowra_quant.json" ] ||
        $LOWRA quantize --model "$MODEL" --bits "$B" --rank 16 --calibration none --out "$Q" > "$OUT/quantize$B.txt"
    [ -f "$QZ/lowra_quant.json" ] ||
        $LOWRA quantize --model "$MODEL" --bits "$B" --rank 16 --calibration none --init zeros --out "$QZ" > /dev/null
    PLAIN=$($LOWRA eval --model "$QZ" "${EVAL[@]}" | ppl)
    LQBASE=$($LOWRA eval --model "$Q" --no-adapter "${EVAL[@]}" | ppl)
    LQ=$($LOWRA eval --model "$Q" "${EVAL[@]}" | ppl)
    [ -f "$A/adapter_model.safetensors" ] || $LOWRA finetune --model "$Q" --train data/train.txt --valid data/valid.txt \
        --out "$A" --steps "$STEPS" --batch 2 --seq 256 --lr 1e-3 --eval-every 50 --save-every 50 --resume --json > "$OUT/finetune$B.json"
    AFTER=$($LOWRA eval --model "$Q" --adapter "$A" "${EVAL[@]}" | ppl)
    ROWS+=("| $B | $PLAIN | $LQBASE | $LQ | $AFTER |")
done
echo "valid perplexity (first $EVAL_TOKENS tokens of data/valid.txt, windows of 256); unquantized: $FP"
echo
echo "| bits | plain quantization (zero init) | LoftQ base alone | LoftQ base + adapter | after $STEPS steps of fine-tuning |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
