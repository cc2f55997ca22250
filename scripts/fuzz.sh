#!/usr/bin/env bash
# The libFuzzer harnesses (Fuzz/, a package of their own), built with AddressSanitizer and
# run one after another for FUZZ_SECONDS each (default 180), seeded from the test fixtures. Fails
# on any crash, hang (> 10 s) or allocation over 2 GB; the crashing input is left in runs/fuzz/.
# Usage: scripts/fuzz.sh [HARNESS...]   (default: every harness)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
SECONDS_EACH=${FUZZ_SECONDS:-180}
swift build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address
BIN=$(swift build --package-path Fuzz -c release --show-bin-path)
# Request seeds are written here (no fixture files for them).
mkdir -p runs/fuzz/request-seeds
printf '%s' '{"model": "a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": true}' \
  > runs/fuzz/request-seeds/chat.json
printf '%s' '{"model": "a@1", "prompt": ["x"], "stop": ["\n", "END"], "temperature": 0.5, "top_p": 0.9, "seed": 3}' \
  > runs/fuzz/request-seeds/text.json
printf '%s' '{"model": "b", "messages": [{"role": "system", "content": [{"type": "text", "text": "t"}]}], "n": 1,
  "stream_options": {"include_usage": true}, "max_completion_tokens": 9}' > runs/fuzz/request-seeds/parts.json
# Directory inputs (a quantized model, adapters) are their files joined by the separator line of
# Fuzz/Sources/FuzzSupport (`writeParts`); an empty part is a missing file. Their seeds come from
# a tiny quantized model and adapters made here once (runs/fuzz/base is also FuzzAdapter's base).
pack() {
    local out=$1 sep=0
    shift
    for f in "$@"; do
        [ $sep = 1 ] && printf '\n@@LOWRA-FILE@@\n'
        sep=1
        [ -f "$f" ] && cat "$f"
    done > "$out"
    return 0
}
W=runs/fuzz/work
if [ ! -f runs/fuzz/base/model.safetensors ]; then
    swift build -c release --product lowra >/dev/null
    LOWRA=$(swift build -c release --show-bin-path)/lowra
    rm -rf "$W" runs/fuzz/base
    mkdir -p "$W"
    python3 -c "
import random
random.seed(1)
w = 'the cat sat on a mat dog ran'.split()
for name, n in (('train.txt', 3000), ('valid.txt', 600)):
    open('$W/' + name, 'w').write(' '.join(random.choice(w) for _ in range(n)))"
    "$LOWRA" quantize --model Tests/Fixtures/tiny_hf --bits 1.5 --calibration none --init none \
        --out runs/fuzz/base >/dev/null
    "$LOWRA" quantize --model Tests/Fixtures/tiny_llama3_hf --bits 2 --no-double-quant --calibration none --init none \
        --out "$W/q2" >/dev/null
    "$LOWRA" finetune --model runs/fuzz/base --train "$W/train.txt" --valid "$W/valid.txt" --out "$W/ad" --steps 1 \
        --seq 32 --batch 2 --valid-sequences 2 --rank 1 >/dev/null
    "$LOWRA" adapter compress "$W/ad" --bits 4 --out "$W/adc4" >/dev/null
    "$LOWRA" adapter compress "$W/ad" --bits 2 --out "$W/adc2" >/dev/null
fi
mkdir -p runs/fuzz/directory-seeds runs/fuzz/data-seeds runs/fuzz/json-seeds
for q in runs/fuzz/base "$W/q2"; do
    pack "runs/fuzz/directory-seeds/model-$(basename "$q")" \
        "$q"/{lowra_quant.json,config.json,model.safetensors,precision_map.json}
done
for a in ad adc4 adc2; do
    pack "runs/fuzz/directory-seeds/adapter-$a" "$W/$a"/{lowra_manifest.json,adapter_config.json,adapter_card.json} \
        "$W/$a"/{adapter_model.safetensors,adapter_model.lowra.safetensors}
done
head -c 600 "$W/train.txt" > runs/fuzz/data-seeds/text.txt
{
    echo '{"prompt": "Say hi", "response": "hi there"}'
    echo '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "cat?"}, '\
'{"role": "assistant", "content": "a mat"}]}'
} > runs/fuzz/data-seeds/chat.jsonl
# tokenizer.json with its tokenizer_config.json's keys (the chat template) in one object: FuzzModelJSON
# writes each input as both files.
for m in tiny_hf tiny_llama3_hf; do
    [ -f "Tests/Fixtures/$m/tokenizer_config.json" ] || continue
    python3 -c "import json, sys; t = json.load(open(sys.argv[1])); t.update(json.load(open(sys.argv[2])))
json.dump(t, open(sys.argv[3], 'w'))" "Tests/Fixtures/$m/tokenizer.json" "Tests/Fixtures/$m/tokenizer_config.json" \
        "runs/fuzz/json-seeds/tokenizer-template-$m.json"
done
declare -A seeds=([FuzzGGUF]="Tests/Fixtures/*.gguf" [FuzzSafeTensors]="Tests/Fixtures/tiny_hf*/*.safetensors"
  [FuzzModelJSON]="Tests/Fixtures/tiny*_hf*/config.json Tests/Fixtures/tokenizer_tiny.json
    Tests/Fixtures/tiny_hf/tokenizer.json runs/fuzz/json-seeds/tokenizer-template-*.json"
  [FuzzRequest]="runs/fuzz/request-seeds/*.json" [FuzzQuantizedModel]="runs/fuzz/directory-seeds/model-*"
  [FuzzAdapter]="runs/fuzz/directory-seeds/adapter-*" [FuzzTrainingData]="runs/fuzz/data-seeds/*")
declare -A dicts=([FuzzModelJSON]="Fuzz/dicts/model_json.dict" [FuzzRequest]="Fuzz/dicts/request.dict"
  [FuzzQuantizedModel]="Fuzz/dicts/directory.dict" [FuzzAdapter]="Fuzz/dicts/directory.dict"
  [FuzzTrainingData]="Fuzz/dicts/training_data.dict")
# One-time allocations LeakSanitizer cannot see through are listed (with why) in Fuzz/lsan.supp.
export LSAN_OPTIONS="suppressions=$PWD/Fuzz/lsan.supp:print_suppressions=0"
for h in "${@:-${!seeds[@]}}"; do
    dir="runs/fuzz/$h"
    mkdir -p "$dir/corpus"
    i=0
    # shellcheck disable=SC2086
    for f in ${seeds[$h]}; do
        i=$((i + 1))
        cp "$f" "$dir/corpus/seed-$i-$(basename "$f")"
    done
    echo "== $h: $SECONDS_EACH s"
    dict=()
    [ -n "${dicts[$h]:-}" ] && dict=(-dict="${dicts[$h]}")
    "$BIN/$h" "${dict[@]}" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/" "$dir/corpus" 2>&1 | grep -E "^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|==|SUMMARY|Done)" || true
    if ls "$dir"/crash-* "$dir"/timeout-* "$dir"/oom-* "$dir"/leak-* >/dev/null 2>&1; then
        echo "$h: failing inputs in $dir" >&2
        exit 1
    fi
done
