#!/usr/bin/env bash
# Whether two quantized model directories hold the same model: every file byte for byte, except
# lowra_quant.json and the adapter's JSON files, which are compared without their timings and the
# paths they record. Used to check that a reshape of the code leaves `lowra quantize` unchanged:
#   lowra quantize --model M --bits 2 --rank 16 --out A   (before)   ... (after) --out B
#   scripts/compare_quantized.sh A B
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DIR_A DIR_B" >&2; exit 2; }
python3 - "$1" "$2" <<'PY'
import json, os, sys
a, b = sys.argv[1], sys.argv[2]
def files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
fa, fb = files(a), files(b)
if fa != fb:
    sys.exit(f"different files: {sorted(set(fa) ^ set(fb))}")
def scrub(x, roots):
    if isinstance(x, dict):
        return {k: scrub(v, roots) for k, v in x.items()
                if k not in ("seconds", "phase_seconds", "sensitivity_seconds", "created")}
    if isinstance(x, list):
        return [scrub(v, roots) for v in x]
    if isinstance(x, str):
        for r in roots:
            x = x.replace(r, "<dir>")
    return x
bad = []
for f in fa:
    pa, pb = os.path.join(a, f), os.path.join(b, f)
    if f.endswith(".json") and (f == "lowra_quant.json" or f.startswith("adapter/")):
        same = scrub(json.load(open(pa)), [a.rstrip("/")]) == scrub(json.load(open(pb)), [b.rstrip("/")])
    else:
        same = open(pa, "rb").read() == open(pb, "rb").read()
    print(("same  " if same else "DIFF  ") + f)
    if not same:
        bad.append(f)
sys.exit(1 if bad else 0)
PY
