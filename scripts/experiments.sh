#!/usr/bin/env bash
# The experiment sweeps on SmolLM2 (each resumable; rerun the same line to continue):
#   main      the paper's Table 2 shape on Tiny Shakespeare: none/qlora/loftq/lowra x 9 budgets
#   quick     the same at 2 and 1.5 bits with 10 steps (about 10 minutes)
#   ablation  the paper's Appendix B at 2-3 bits: qlora, loftq, lowra-pa (assigner only), lowra
#   chat      the multi-turn chat task (ShareGPT, assistant turns only; needs scripts/setup_chat.sh)
#   calibrated  the calibrated ablation: data-free lowra, then each calibrated step added in turn
#             (diag, gptq, fisher, cloq, repair, distill) at 2 and 1.5 bits (BITS to change), beside
#             the unquantized row
# MODEL picks another model (e.g. the Qwen GGUF of make setup-qwen).
# Usage: scripts/experiments.sh main|quick|ablation|chat|calibrated [extra lowra experiment options]
# Every cell fine-tunes; STEPS (default 40) sets the length. All but quick compare every cell with
# the unquantized base on data/fortunes.txt (drift). LOWRA picks the binary (copy it if you rebuild meanwhile).
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=${LOWRA:-.build/release/lowra}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
STEPS=${STEPS:-40}
which=${1:?main, quick, ablation, chat or calibrated}; shift
COMMON=(--model "$MODEL" --steps "$STEPS" --batch 2 --rank 16 --eval-tokens 4096 --drift data/fortunes.txt --drift-tokens 1024)
case "$which" in
  main)
    $LOWRA experiment "${COMMON[@]}" --methods none,qlora,loftq,lowra --bits 4,3,2.5,2.25,2,1.9,1.8,1.75,1.5 --seq 256 \
      --train data/train.txt --valid data/valid.txt --test data/test.txt --out runs/experiment --resume "$@" ;;
  quick)
    $LOWRA experiment --model "$MODEL" --quick --drift data/fortunes.txt --seq 256 \
      --train data/train.txt --valid data/valid.txt --test data/test.txt --out runs/quick --resume "$@" ;;
  ablation)
    $LOWRA experiment "${COMMON[@]}" --methods qlora,loftq,lowra-pa,lowra --bits 3,2.5,2 --seq 256 \
      --train data/train.txt --valid data/valid.txt --test data/test.txt --out runs/ablation --resume "$@" ;;
  chat)
    [ -f data/chat/train.jsonl ] || bash scripts/setup_chat.sh
    $LOWRA experiment "${COMMON[@]}" --methods none,qlora,loftq,lowra --bits 4,2,1.5 --seq 512 --eval-tokens 40 \
      --train data/chat/train.jsonl --valid data/chat/valid.jsonl --test data/chat/test.jsonl --out runs/chat --resume "$@" ;;
  calibrated)
    $LOWRA experiment "${COMMON[@]}" --bits "${BITS:-2,1.5}" --seq 256 \
      --methods none,lowra-distill,lowra-repair,lowra-cloq,lowra-fisher,lowra-gptq,lowra-diag,lowra \
      --calibration data/calibration.txt --train data/train.txt --valid data/valid.txt --test data/test.txt \
      --out runs/ablation13 --resume "$@" ;;
  *) echo "usage: $0 main|quick|ablation|chat|calibrated" >&2; exit 2 ;;
esac
