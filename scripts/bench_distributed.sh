#!/usr/bin/env bash
# Step time of LoRA fine-tuning with one process and with `mpirun -np 2 … --distributed` on this host,
# the time rank 0 waits for the other at each step's end (a barrier) and then spends in the all-reduce
# of the adapter's gradient (docs/past-one-machine.md).
#
#   scripts/bench_distributed.sh [MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf] [STEPS=20]
#
# The same global batch (4 × 128 tokens), rank 16 and seed in every run; one process uses every core,
# two ranks split them (LOWRA_THREADS = cores / 2 each). Prints one JSON line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf} steps=${2:-20}
lowra=${LOWRA:-.build/release/lowra}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(finetune --model "$model" --train data/train.txt --steps "$steps" --batch 4 --seq 128 --rank 16 --lr 1e-3
  --json)
summary() {
  python3 -c '
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
steps, comm, wait = r["steps"], r.get("communication_seconds", 0), r.get("wait_seconds", 0)
print(json.dumps({"run": sys.argv[1], "ranks": r.get("ranks", 1), "seconds_per_step": round(r["seconds"] / steps, 4),
                  "tokens_per_s": round(r["tokens_per_s"], 1), "communication_seconds_per_step": round(comm / steps, 5),
                  "communication_share": round(comm / r["seconds"], 4),
                  "wait_seconds_per_step": round(wait / steps, 5), "final_train_loss": r["final_train_loss"]}))
' "$1"
}
"$lowra" "${args[@]}" --out "$work/one" 2>/dev/null | summary "one process"
mpirun --allow-run-as-root --oversubscribe -np 2 "$lowra" "${args[@]}" --distributed --out "$work/two" 2>/dev/null \
  | summary "mpirun -np 2"
