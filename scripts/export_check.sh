#!/usr/bin/env bash
# Checks `lowra export` against llama.cpp (built by scripts/build_llamacpp.sh; a benchmark tool, not CI):
# quantizes MODEL to 2 bits, fine-tunes an adapter, exports the merged model (f16 and q8_0), the bare base
# and the adapter alone (GGUF LoRA), then compares
#   - llama-perplexity on the merged f16 export with `lowra eval --llama-perplexity` (same windows, same scoring),
#   - llama-perplexity on the base with --lora adapter.gguf with the merged export,
#   - the first 32 greedy tokens of llama-completion on the merged export with `lowra generate --temperature 0`.
# Prints one table row per model; everything else goes to OUT/log.txt.
#
#   scripts/export_check.sh MODEL OUT [STEPS=40] [SEQ=128] [EVAL_TOKENS=8192]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 out=$2 steps=${3:-40} seq=${4:-128} eval_tokens=${5:-8192}
L=${LOWRA:-.build/release/lowra}
bin=$(dirname "$(scripts/build_llamacpp.sh)")
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
run() { echo "+ $*" >> "$log"; "$@" 2>> "$log"; }

[ -d "$out/q2" ] || run $L quantize --model "$model" --bits 2 --out "$out/q2" > /dev/null
[ -d "$out/ft" ] || run $L finetune --model "$out/q2" --train data/train.txt --valid data/valid.txt --steps "$steps" \
    --batch 4 --seq "$seq" --lr 1e-3 --out "$out/ft" > /dev/null
run $L export --model "$out/q2" --adapter "$out/ft" --gguf "$out/merged-f16.gguf" --type f16 >> "$log"
run $L export --model "$out/q2" --adapter "$out/ft" --gguf "$out/merged-q8_0.gguf" --type q8_0 >> "$log"
run $L export --model "$out/q2" --no-adapter --gguf "$out/base-f16.gguf" --type f16 >> "$log"
run $L export --model "$out/q2" --adapter "$out/ft" --adapter-only --gguf "$out/adapter.gguf" >> "$log"

# Perplexity: windows of 512, the first EVAL_TOKENS tokens of the validation text.
chunks=$((eval_tokens / 512))
ours=$(run $L eval --model "$out/q2" --adapter "$out/ft" --data data/valid.txt --context 512 --llama-perplexity \
    --max-tokens "$eval_tokens" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["perplexity"])')
llama_ppl() {  # llama.cpp logs to stderr, the final estimate included
    echo "+ llama-perplexity $*" >> "$log"
    "$bin/llama-perplexity" -f data/valid.txt -c 512 -b 512 --chunks "$chunks" -t "$(nproc)" "$@" 2>&1 |
        tee -a "$log" | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'
}
f16=$(llama_ppl -m "$out/merged-f16.gguf")
q8=$(llama_ppl -m "$out/merged-q8_0.gguf")
lora=$(llama_ppl -m "$out/base-f16.gguf" --lora "$out/adapter.gguf")

# Greedy continuation: the first 32 tokens.
prompt="ROMEO:"
want=$(run $L generate --model "$out/q2" --adapter "$out/ft" --prompt "$prompt" --max-new-tokens 32 --temperature 0)
got=$(run "$bin/llama-completion" -m "$out/merged-f16.gguf" -p "$prompt" -n 32 --temp 0 -no-cnv --no-display-prompt \
    -t "$(nproc)" --simple-io < /dev/null)
same=$([ "$(printf %s "$want" | sed -e 's/[[:space:]]*$//')" = "$(printf %s "$got" | sed -e 's/[[:space:]]*$//')" ] &&
    echo same || echo differs)
{ echo "lowra generate:"; echo "$want"; echo "llama-completion:"; echo "$got"; } >> "$log"

python3 - "$model" "$ours" "$f16" "$q8" "$lora" "$same" <<'EOF'
import sys
model, ours, f16, q8, lora, same = sys.argv[1:]
ours, f16, q8, lora = map(float, (ours, f16, q8, lora))
rel = lambda a, b: 100 * (a / b - 1)
print(f"| {model.split('/')[-1]} | {ours:.4f} | {f16:.4f} ({rel(f16, ours):+.2f}%) | {q8:.4f} ({rel(q8, ours):+.2f}%) "
      f"| {lora:.4f} ({rel(lora, f16):+.2f}% vs merged) | {same} |")
EOF
