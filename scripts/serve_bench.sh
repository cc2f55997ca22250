#!/usr/bin/env bash
# Load on `lowra serve` over loopback (a benchmark, not a test): on the shelf demo's
# 2-bit SmolLM2 and its three adapters (scripts/shelf_demo.sh makes them),
#  1. aggregate tokens/s and time to first token with 1, 4 and 16 concurrent streams, requests
#     round-robin over 4 models (the base and the three adapters);
#  2. 100 adapters on a shelf (copies of the demo's, each with its own card name) under a cap that
#     holds 10: requests round-robin over all 100 keep being served, evictions counted.
#  3. the same streams on Qwen2.5-Coder-0.5B at 2 bits (when scripts/setup_qwen.sh has fetched
#     it): quantized data-free, one adapter fine-tuned 20 steps on Tiny Shakespeare with its card,
#     served as three adapters (copies under their own names: three resident adapters' bytes) and
#     the base.
# Writes docs/serve-smollm2/ and docs/serve-qwen2.5/ (results.md, .json). Usage: scripts/serve_bench.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=${LOWRA:-.build/release/lowra}
PORT=${1:-8094}
OUT=runs/shelf
DOCS=docs/serve-smollm2
MAX_TOKENS=${MAX_TOKENS:-64}
[ -f "$OUT/adapters/fortunes/adapter_card.json" ] || bash scripts/shelf_demo.sh
mkdir -p "$DOCS"

serve() {  # shelf cap-MB log [base]
  $LOWRA serve --model "${4:-$OUT/base}" --shelf "$1" --port "$PORT" --max-resident-mb "$2" > "$3" 2>&1 &
  server=$!
  for _ in $(seq 150); do grep -q "listening on" "$3" && return; sleep 0.2; done
  echo "the server did not start:" >&2; cat "$3" >&2; exit 1
}
trap 'kill ${server:-0} 2>/dev/null || true' EXIT

serve "$OUT/adapters" 1024 "$OUT/bench-serve.log"
python3 scripts/serve_bench.py --url "http://127.0.0.1:$PORT" --models base,shakespeare,chat,fortunes \
  --streams 1,4,16 --requests 4 --max-tokens "$MAX_TOKENS" --json "$DOCS/streams.json" | tee "$DOCS/streams.md"
kill $server; wait $server 2>/dev/null || true

# 100 copies of one adapter, each its own shelf entry; a cap of 10 adapters' bytes.
rm -rf "$OUT/shelf100"; mkdir -p "$OUT/shelf100"
names=()
for i in $(seq -w 0 99); do
  cp -r "$OUT/adapters/shakespeare" "$OUT/shelf100/a$i"
  $LOWRA card set "$OUT/shelf100/a$i" --name "a$i" > /dev/null
  names+=("a$i")
done
bytes=$(stat -c %s "$OUT/adapters/shakespeare/adapter_model.safetensors")
cap=$(( bytes * 10 / 1048576 + 1 ))
serve "$OUT/shelf100" "$cap" "$OUT/bench-shelf100.log"
python3 scripts/serve_bench.py --url "http://127.0.0.1:$PORT" --models "$(IFS=,; echo "${names[*]}")" \
  --streams 4 --requests 50 --max-tokens 16 --json "$DOCS/shelf100.json" | tee "$DOCS/shelf100.md"
kill $server; wait $server 2>/dev/null || true

header() {  # model server-log docs: the title, the machine and kernels, the streams table
  echo "# lowra serve on $1 at 2 bits (scripts/serve_bench.sh)"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "$(grep -m1 'kernels:' "$2")."
  echo
  echo "## Concurrent streams over 4 models (base + 3 adapters), $MAX_TOKENS tokens per request"
  echo
  cat "$3/streams.md"
}

{
  header SmolLM2-135M "$OUT/bench-serve.log" "$DOCS"
  echo
  echo "## 100 adapters, resident cap ${cap} MB (10 adapters of $((bytes / 1048576)) MB), 200 requests round-robin"
  echo
  cat "$DOCS/shelf100.md"
} > "$DOCS/results.md"
cat "$DOCS/results.md"

QWEN=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
[ -f "$QWEN" ] || exit 0
Q=runs/shelf-qwen
QDOCS=docs/serve-qwen2.5
mkdir -p "$Q/adapters" "$QDOCS"
[ -f "$Q/base/lowra_quant.json" ] ||
  $LOWRA quantize --model "$QWEN" --bits 2 --rank 16 --calibration none --out "$Q/base"
if ! grep -q '"drift"' "$Q/adapters/shakespeare/adapter_card.json" 2>/dev/null; then
  rm -rf "$Q/adapters"/*
  $LOWRA finetune --model "$Q/base" --train data/train.txt --valid data/valid.txt --steps 20 --batch 1 --seq 128 \
    --valid-sequences 20 --out "$Q/adapters/shakespeare"
  $LOWRA eval --model "$Q/base" --adapter "$Q/adapters/shakespeare" --data data/fortunes.txt --reference "$QWEN" \
    --max-tokens 2200 --record
fi
for n in sonnets plays; do
  [ -f "$Q/adapters/$n/adapter_card.json" ] && continue
  cp -r "$Q/adapters/shakespeare" "$Q/adapters/$n"
  $LOWRA card set "$Q/adapters/$n" --name "$n" > /dev/null
done
serve "$Q/adapters" 1024 "$Q/bench-serve.log" "$Q/base"
python3 scripts/serve_bench.py --url "http://127.0.0.1:$PORT" --models base,shakespeare,sonnets,plays \
  --streams 1,4,16 --requests 4 --max-tokens "$MAX_TOKENS" --json "$QDOCS/streams.json" | tee "$QDOCS/streams.md"
kill $server; wait $server 2>/dev/null || true
header Qwen2.5-Coder-0.5B "$Q/bench-serve.log" "$QDOCS" > "$QDOCS/results.md"
cat "$QDOCS/results.md"
