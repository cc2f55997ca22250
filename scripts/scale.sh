#!/usr/bin/env bash
# Measurements at 7B/13B scale on a synthetic model of the real shape: synth → quantize
# (2 bits; LoftQ rank 16 for 7B) → eval 512 tokens → finetune 3 steps (rank 16, seq 256, batch 1,
# with and without --recompute) → generate 16 tokens. Each step's peak RSS and wall time (GNU time)
# go into a markdown table on stdout; the models live under $BIG (default runs/big). Steps whose
# output exists are skipped, so a rerun continues.
# Usage: scripts/scale.sh 7b|13b   [STEPS="synth quantize eval finetune generate"] [INIT=loftq|none]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:?usage: scripts/scale.sh 7b|13b}
LOWRA=${LOWRA:-$(pwd)/.build/release/lowra}
BIG=${BIG:-runs/big}
STEPS=${STEPS:-synth quantize eval finetune generate}
SRC=$BIG/llama2-$SIZE-synth
Q=$BIG/llama2-$SIZE-q2
INIT=${INIT:-$([ "$SIZE" = 7b ] && echo loftq || echo none)}
mkdir -p "$BIG"
ROWS=()
measure() {  # measure LABEL CMD...: runs CMD under GNU time, records peak RSS and wall time
    local label=$1; shift
    local t; t=$(mktemp)
    /usr/bin/time -f "%M %e" -o "$t" "$@" > "$BIG/$label.out" 2> "$BIG/$label.err"
    read -r kb secs < "$t"; rm -f "$t"
    ROWS+=("| $label | $(awk -v k="$kb" 'BEGIN { printf "%.2f", k / 1048576 }') GiB | $secs s |")
    echo "[scale] $label: peak RSS ${kb} KB, ${secs} s" >&2
}
for step in $STEPS; do
    case $step in
    synth)
        [ -f "$SRC/config.json" ] || measure "synth-$SIZE" "$LOWRA" synth --config "llama2-$SIZE" --out "$SRC" --json ;;
    quantize)
        [ -f "$Q/lowra_quant.json" ] || measure "quantize-$SIZE-2bit-$INIT" "$LOWRA" quantize --model "$SRC" --bits 2 \
            --calibration none \
            --init "$INIT" --rank 16 --json --out "$Q" ;;
    eval)
        measure "eval-$SIZE-2bit-512" "$LOWRA" eval --model "$Q" --data data/test.txt --max-tokens 512 --context 512 \
            --json ;;
    finetune)
        for mode in "" --recompute; do
            rm -rf "$BIG/ft$mode"
            measure "finetune-$SIZE-3steps${mode:+-recompute}" "$LOWRA" finetune --model "$Q" --train data/train.txt \
                --out "$BIG/ft$mode" --steps 3 --batch 1 --seq 256 --rank 16 $mode --json
            "$LOWRA" memory --model "$Q" --bits 2 --rank 16 --batch 1 --seq 256 $mode --json > "$BIG/memory$mode.json"
        done ;;
    generate)
        measure "generate-$SIZE-16" "$LOWRA" generate --model "$Q" --prompt "ROMEO:" --max-new-tokens 16 \
            --temperature 0 ;;
    esac
done
echo "| step | peak RSS | wall time |"
echo "| --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
