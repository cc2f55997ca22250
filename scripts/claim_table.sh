#!/usr/bin/env bash
# Where "accurate under 2 bits" holds: the default recipe (lowra-cloq), the paper's data-free one
# (lowra) and full-precision LoRA (none) at 4, 3, 2.5, 2, 1.75 and 1.5 bits, each fine-tuned by the
# Shakespeare protocol (rank 16, 2 x 256 tokens per step, lr 1e-3, seed 0), with drift on the
# fortunes; then one plot of perplexity after fine-tuning / full-precision LoRA's against the bits.
# Each sweep is resumable (rerun the same line). Runs:
#   smollm2-40    SmolLM2-135M, 40 steps          (about 1 hour on 2 cores)
#   smollm2-400   SmolLM2-135M, 400 steps         (about 4 hours)
#   qwen-40       Qwen2.5-Coder-0.5B, 40 steps    (needs scripts/setup_qwen.sh; about 2 hours)
#   plot          runs/claim/gap.svg from the sweeps that exist
# Usage: [BITS=4,3,2.5,2,1.75,1.5] [METHODS=none,lowra-cloq,lowra] [LOWRA=…] scripts/claim_table.sh \
#          smollm2-40|smollm2-400|qwen-40|plot
# (a sweep resumed with more methods or budgets keeps the cells it has)
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=${LOWRA:-.build/release/lowra}
BITS=${BITS:-4,3,2.5,2,1.75,1.5}
METHODS=${METHODS:-none,lowra-cloq,lowra}
SMOL=models/SmolLM2-135M-Instruct.Q4_1.gguf
QWEN=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
sweep() {  # model steps out
    $LOWRA experiment --model "$1" --steps "$2" --batch 2 --rank 16 --eval-tokens 4096 --seq 256 \
        --drift data/fortunes.txt --drift-tokens 1024 --bits "$BITS" --methods "$METHODS" \
        --calibration data/calibration.txt --train data/train.txt --valid data/valid.txt --test data/test.txt \
        --out "$3" --resume
}
case "${1:?smollm2-40, smollm2-400, qwen-40 or plot}" in
  smollm2-40) sweep "$SMOL" 40 runs/claim/smollm2-40 ;;
  smollm2-400) sweep "$SMOL" 400 runs/claim/smollm2-400 ;;
  qwen-40)
    [ -f "$QWEN" ] || bash scripts/setup_qwen.sh
    sweep "$QWEN" 40 runs/claim/qwen-40 ;;
  plot)
    runs=()
    for r in smollm2-40 smollm2-400 qwen-40; do
        [ -f runs/claim/$r/results.json ] && runs+=("$r=runs/claim/$r")
    done
    [ ${#runs[@]} -gt 0 ] || { echo "no sweep in runs/claim yet" >&2; exit 1; }
    $LOWRA plot --gap "${runs[@]}" --out runs/claim/gap.svg ;;
  *) echo "usage: $0 smollm2-40|smollm2-400|qwen-40|plot" >&2; exit 2 ;;
esac
