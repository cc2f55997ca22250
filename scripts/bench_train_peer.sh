#!/usr/bin/env bash
# LoRA training tokens/s of LowRA's 2-bit base — forward and input gradients through the integer tiles,
# the forward alone (--fp32-backward), and fp32 panels throughout (LOWRA_TILES=0) — against PyTorch +
# PEFT fp32 LoRA on the same model, text, batch, rank and threads, alternating in one run (a benchmark,
# not a test).
# Usage: scripts/bench_train_peer.sh [ROUNDS]   (needs: pip install torch transformers peft gguf)
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LOWRA:-.build/release/lowra}
SRC=models/SmolLM2-135M-Instruct.Q4_1.gguf
BATCH=${BATCH:-4} SEQ=${SEQ:-128} RANK=${RANK:-16}
python3 -c "import torch, transformers, peft, gguf" 2>/dev/null ||
    { echo "needs PyTorch: pip install torch transformers peft gguf" >&2; exit 1; }
[ -f runs/bq2/lowra_quant.json ] ||
    "$L" quantize --model "$SRC" --bits 2 --calibration none --init none --out runs/bq2 --json >/dev/null
rate='import json,sys; print("%.1f" % json.load(sys.stdin)["tokens_per_s"])'
lowra() {  # [VAR=value …] [flag …]: tokens/s of LowRA's step with those variables and flags
    local vars=()
    while [ $# -gt 0 ] && [[ $1 == *=* ]]; do vars+=("$1"); shift; done
    env "${vars[@]}" "$L" bench train --model runs/bq2 --batch "$BATCH" --seq "$SEQ" --rank "$RANK" --steps 3 \
        --json "$@" 2>/dev/null | python3 -c "$rate"
}
declare -A all
for round in $(seq "${1:-3}"); do
    for who in tiles forward panels peft; do
        case $who in
        tiles) r=$(lowra) ;;
        forward) r=$(lowra --fp32-backward) ;;
        panels) r=$(lowra LOWRA_TILES=0) ;;
        peft) r=$(python3 scripts/bench_peft.py --model "$SRC" --batch "$BATCH" --seq "$SEQ" --rank "$RANK" \
            --steps 3 2>/dev/null | python3 -c "$rate") ;;
        esac
        all[$who]="${all[$who]:-} $r"
        echo "round $round | $who | $r tok/s"
    done
done
python3 - "${all[tiles]}" "${all[forward]}" "${all[panels]}" "${all[peft]}" <<'EOF'
import statistics as st, sys
t, f, p, q = ([float(v) for v in a.split()] for a in sys.argv[1:])
fmt = lambda v: "%.1f ± %.1f" % (st.mean(v), st.stdev(v) if len(v) > 1 else 0)
print("lowra 2-bit, integer tiles: %s tok/s (%.2f× PyTorch+PEFT)" % (fmt(t), st.mean(t) / st.mean(q)))
print("  forward only:             %s tok/s (%.2f× PyTorch+PEFT)" % (fmt(f), st.mean(f) / st.mean(q)))
print("lowra 2-bit, fp32 panels:   %s tok/s (%.2f× PyTorch+PEFT)" % (fmt(p), st.mean(p) / st.mean(q)))
print("PyTorch + PEFT, fp32:       %s tok/s" % fmt(q))
EOF
