#!/usr/bin/env bash
# Issue 15's libFuzzer harnesses (Fuzz/, a package of their own), built with AddressSanitizer and
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
declare -A seeds=([FuzzGGUF]="Tests/Fixtures/*.gguf" [FuzzSafeTensors]="Tests/Fixtures/tiny_hf*/*.safetensors"
  [FuzzModelJSON]="Tests/Fixtures/tiny*_hf*/config.json Tests/Fixtures/tokenizer_tiny.json Tests/Fixtures/tiny_hf/tokenizer.json"
  [FuzzRequest]="runs/fuzz/request-seeds/*.json")
declare -A dicts=([FuzzModelJSON]="Fuzz/dicts/model_json.dict" [FuzzRequest]="Fuzz/dicts/request.dict")
# LeakSanitizer reports a 4 KB buffer of Foundation's file reading (Data(contentsOf:), reached only
# through an interior pointer) as leaked once per process; a real per-input leak would still trip
# -rss_limit_mb over a million runs.
declare -A extra=([FuzzModelJSON]="-detect_leaks=0")
declare -A asan=([FuzzModelJSON]="detect_leaks=0")
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
    [ -n "${extra[$h]:-}" ] && dict+=("${extra[$h]}")
    ASAN_OPTIONS="${asan[$h]:-}" "$BIN/$h" "${dict[@]}" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/" "$dir/corpus" 2>&1 | grep -E "^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|==|SUMMARY|Done)" || true
    if ls "$dir"/crash-* "$dir"/timeout-* "$dir"/oom-* >/dev/null 2>&1; then
        echo "$h: failing inputs in $dir" >&2
        exit 1
    fi
done
