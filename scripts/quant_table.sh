#!/usr/bin/env bash
# Post-training quantization table for SmolLM2 (no fine-tuning): every method x budget, plus
# ablations. Perplexity and accuracy on the first 2048 tokens of data/test.txt (windows of 512),
# KL divergence and top-1 agreement against the unquantized model on the same tokens.
# Post-training only: no adapter (--init none).
# Usage: scripts/quant_table.sh [OUTDIR] > table.md    (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
LOWRA=.build/release/lowra
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=${1:-runs/quant-table}
CAL=/usr/share/common-licenses/GPL-3   # generic English text present on every Debian system
mkdir -p "$OUT"
evaljson() { $LOWRA eval --model "$1" --data data/test.txt --max-tokens 2048 --context 512 --reference "$MODEL" --json 2>/dev/null; }
row() {  # label, bits, extra quantize args...
  local label=$1 bits=$2; shift 2
  local dir="$OUT/$(echo "$label-$bits" | tr ' /+' '___')"
  # Data-free unless the row names a calibration text (the options given last win).
  $LOWRA quantize --model "$MODEL" --bits "$bits" --out "$dir" --calibration none --sensitivity none --init none \
    --json "$@" 2>/dev/null > "$dir.quant.json"
  evaljson "$dir" > "$dir.eval.json"
  python3 - "$label" "$bits" "$dir" <<'PY'
import json, sys
label, bits, d = sys.argv[1:4]
q = json.load(open(d + ".quant.json")); e = json.load(open(d + ".eval.json"))
print("| %s | %s | %.4f | %.4f | %.3f | %.4g | %.3f | %.3f | %.2f | %.1f |" % (
    label, bits, q["code_bits_per_param"], q["stored_bits_per_param"], q["relative_error"], e["perplexity"],
    e["accuracy"], e["kl_divergence"], e["top1_agreement"], q["seconds"]))
PY
}
echo "| method | target bits | code bits/param | stored bits/param | rel. weight error | test ppl | test acc | KL to fp (nats) | top-1 agree | quantize s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
python3 - <<PY
import json, subprocess
e = json.loads(subprocess.run(["$LOWRA", "eval", "--model", "$MODEL", "--data", "data/test.txt", "--max-tokens", "2048", "--context", "512", "--json"], capture_output=True, text=True).stdout)
print("| unquantized (GGUF Q4_1 -> fp32) | - | - | - | 0 | %.4g | %.3f | 0 | 1 | - |" % (e["perplexity"], e["accuracy"]))
PY
for b in 4 3 2.5 2.25 2; do row qlora "$b" --method qlora; done
for b in 4 3 2.5 2.25 2 1.75 1.5; do row lowra "$b"; done
for b in 3 2.5 2 1.75 1.5; do row "lowra + calibration" "$b" --calibration "$CAL"; done
for b in 2.5 1.75; do
  row "lowra, NF levels (assigner only)" "$b" --lloyd-iters 0
  row "lowra, tensor codebooks (averaged)" "$b" --codebook tensor
  row "lowra, absmax² weighting" "$b" --weighting absmax2
  row "lowra, two-level ILP" "$b" --assigner ilp
done
