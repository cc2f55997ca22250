#!/usr/bin/env bash
# What `lowra quantize` costs, each run under GNU time on an otherwise idle machine, as markdown rows:
#   scripts/quantize_cost.sh presets   SmolLM2-135M at 2 bits with each preset (fast, standard, thorough)
#   scripts/quantize_cost.sh wide      LLaMA-2-7B-width models of BLOCKS blocks (default "1 2"; `lowra synth` of a
#                                      config with that num_hidden_layers; random weights: time and memory are real,
#                                      accuracy is not), the default preset (PRESET to choose): a block's cost is the
#                                      difference of two runs, and 31 of them plus the 1-block run project a 7B model.
# Environment: LOWRA (the binary), OUT (scratch, default runs/quantize-cost), BITS (2), RANK (adapter rank: 64, the
# default; the experiments use 16), PRESETS ("fast standard thorough").
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=${LOWRA:-$(pwd)/.build/release/lowra}
OUT=${OUT:-runs/quantize-cost}
BITS=${BITS:-2}
RANK=${RANK:-64}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$OUT"
run() {  # run LABEL ARGS...: quantize under GNU time; prints a row with wall time, peak RSS and the phases
    local label=$1; shift
    rm -rf "$OUT/$label"
    /usr/bin/time -f "%e %M" -o "$OUT/$label.time" "$LOWRA" quantize --bits "$BITS" --rank "$RANK" --json \
        --out "$OUT/$label" "$@" > "$OUT/$label.json" 2> "$OUT/$label.err"
    read -r secs kb < "$OUT/$label.time"
    python3 - "$OUT/$label.json" "$label" "$secs" "$kb" "$*" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["phase_seconds"]
fisher = d.get("sensitivity_seconds")
print(f"| {sys.argv[2]} | `{sys.argv[5]}` | {float(sys.argv[3]):.1f} s | {int(sys.argv[4]) / 1048576:.2f} GiB | "
      f"{'—' if fisher is None else f'{fisher:.1f} s'} | {p['analyze']:.1f} / {p['pack']:.1f} "
      f"({p.get('calibrate', 0):.1f}) s |")
EOF
}
echo "| run | arguments | wall | peak RSS | Fisher | analyze / pack (calibration forwards) |"
echo "| --- | --- | --- | --- | --- | --- |"
case ${1:-presets} in
presets)
    for preset in ${PRESETS:-fast standard thorough}; do run "smollm2-$preset" --model "$MODEL" --preset "$preset"; done ;;
wide)
    for layers in ${BLOCKS:-1 2}; do
        src=$OUT/llama2-7b-width-$layers
        if [ ! -f "$src/config.json" ]; then
            python3 - "$OUT/config-$layers.json" "$layers" <<'EOF'
import json, sys
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
           "intermediate_size": 11008, "num_hidden_layers": int(sys.argv[2]), "num_attention_heads": 32,
           "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"},
          open(sys.argv[1], "w"))
EOF
            "$LOWRA" synth --config "$OUT/config-$layers.json" --out "$src" > /dev/null
        fi
        run "7b-width-$layers-blocks" --model "$src" ${PRESET:+--preset $PRESET}
    done ;;
*) echo "usage: $0 presets|wide" >&2; exit 2 ;;
esac
