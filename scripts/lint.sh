#!/usr/bin/env bash
# Lines past 120 columns (characters, not bytes) in Sources/, Tests/ and Fuzz/Sources (Swift, C).
# A line that is one string literal and nothing else (a long message or a fixture's text) may run
# past; anything else may not. Exit 1 on any, listing them. `make lint` runs it; so does CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import pathlib, re, sys
LIMIT = 120
literal = re.compile(r'^\s*(\+\s*)?"([^"\\]|\\.)*"\s*(\+|,|\)|\)\))?\s*$')
bad = []
for root in ("Sources", "Tests", "Fuzz/Sources"):
    for p in sorted(pathlib.Path(root).rglob("*")):
        if p.suffix not in (".swift", ".c", ".h") or not p.is_file():
            continue
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if len(line) > LIMIT and not literal.match(line):
                bad.append(f"{p}:{n}: {len(line)} columns")
for b in bad:
    print(b)
print(f"lint: {len(bad)} lines past {LIMIT} columns", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
