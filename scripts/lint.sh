#!/usr/bin/env bash
# Lines past 120 columns (characters, not bytes) in Sources/, Tests/ and Fuzz/Sources (Swift, C).
# Long strings are wrapped too (a `+` between literals, or a `\` line continuation inside a
# multi-line one). Exit 1 on any, listing them. `make lint` runs it; so does CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import pathlib, sys
LIMIT = 120
bad = []
for root in ("Sources", "Tests", "Fuzz/Sources"):
    for p in sorted(pathlib.Path(root).rglob("*")):
        if p.suffix not in (".swift", ".c", ".h") or not p.is_file():
            continue
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if len(line) > LIMIT:
                bad.append(f"{p}:{n}: {len(line)} columns")
for b in bad:
    print(b)
print(f"lint: {len(bad)} lines past {LIMIT} columns", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
