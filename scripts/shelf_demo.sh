#!/usr/bin/env bash
# The adapter shelf end to end: one 2-bit SmolLM2 (the calibrated recipe), three small
# adapters over it (Tiny Shakespeare, ShareGPT chat, Debian's fortunes), each with its card (its
# fine-tuning validation as the task evaluation, `lowra eval --record` as the drift evaluation
# against the unquantized model), served together by `lowra serve` and queried through the
# official `openai` Python client. About 10 minutes on 2 cores; rerunning reuses what exists.
# Usage: scripts/shelf_demo.sh [PORT]   (STEPS=40 sets the fine-tuning length)
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=${LOWRA:-.build/release/lowra}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=runs/shelf
PORT=${1:-8093}
STEPS=${STEPS:-40}
[ -x "$LOWRA" ] || swift build -c release --product lowra
[ -f data/chat/train.jsonl ] || bash scripts/setup_chat.sh
mkdir -p "$OUT/data" "$OUT/adapters"

[ -f "$OUT/base/lowra_quant.json" ] ||
  $LOWRA quantize --model "$MODEL" --bits 2 --precisions 1,2,4 --rank 16 --calibration data/calibration.txt \
    --sensitivity fisher --init cloq --out "$OUT/base"

# The fortunes text split 90/10 by lines for its adapter; its drift text is then Shakespeare.
n=$(wc -l < data/fortunes.txt)
head -n $((n * 9 / 10)) data/fortunes.txt > "$OUT/data/fortunes-train.txt"
tail -n +$((n * 9 / 10 + 1)) data/fortunes.txt > "$OUT/data/fortunes-valid.txt"

train() {  # name train valid drift task seq
  local dir="$OUT/adapters/$1"
  if [ ! -f "$dir/adapter_card.json" ] || ! grep -q '"drift"' "$dir/adapter_card.json"; then
    rm -rf "$dir"
    $LOWRA finetune --model "$OUT/base" --train "$2" --valid "$3" --steps "$STEPS" --batch 2 --seq "$6" \
      --valid-sequences 48 --out "$dir"
    $LOWRA card set "$dir" --task "$5" --owner "shelf demo" --retire-after 2027-12-31 > /dev/null
    $LOWRA eval --model "$OUT/base" --adapter "$dir" --data "$4" --reference "$MODEL" --max-tokens 2200 --record
  fi
  $LOWRA card verify "$dir" --model "$OUT/base"
}
train shakespeare data/train.txt data/valid.txt data/fortunes.txt "continue Shakespeare's plays" 256
train chat data/chat/train.jsonl data/chat/valid.jsonl data/fortunes.txt "answer like ShareGPT's assistant" 512
train fortunes "$OUT/data/fortunes-train.txt" "$OUT/data/fortunes-valid.txt" data/test.txt "write fortune-cookie sayings" 256

$LOWRA serve --model "$OUT/base" --shelf "$OUT/adapters" --port "$PORT" > "$OUT/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$OUT/serve.log" && break; sleep 0.2; done
grep "listening on" "$OUT/serve.log"

python3 - "$PORT" <<'PY'
import sys
from openai import OpenAI
client = OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="unused")
print("models:", ", ".join(m.id for m in client.models.list().data))
asks = {
    "shakespeare": ("completion", "ROMEO:\n"),
    "chat": ("chat", "How do I make a cup of tea?"),
    "fortunes": ("completion", "A wise man once said"),
    "base": ("completion", "A wise man once said"),
}
for model, (kind, prompt) in asks.items():
    if kind == "chat":
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=48, temperature=0)
        text = r.choices[0].message.content
    else:
        r = client.completions.create(model=model, prompt=prompt, max_tokens=48, temperature=0)
        text = prompt + r.choices[0].text
    print(f"\n--- {model} ({kind}, {r.usage.completion_tokens} tokens) ---\n{text.strip()}")
PY
