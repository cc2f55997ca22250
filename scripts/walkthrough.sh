#!/usr/bin/env bash
# Runs the README's walkthrough exactly as written (the lines between <!-- walkthrough --> and
# <!-- /walkthrough -->), in a scratch folder that links the repository's .build, models and data,
# so the user's runs/ is never touched. Fails if any line fails or the server's answer is not a
# completion. Needs the release build (make build) and setup. 5–9 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ -x .build/release/lowra ] || { echo "walkthrough: build first (make build)" >&2; exit 1; }
block=$(awk '/<!-- walkthrough -->/{on=1; next} /<!-- \/walkthrough -->/{on=0} on' README.md | sed '/^```/d')
[ -n "$block" ] || { echo "walkthrough: no walkthrough block in README.md" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$repo/.build" "$repo/models" "$repo/data" "$work/"
cd "$work"
start=$(date +%s)
printf '%s\n' "set -euo pipefail" "$block" > walkthrough.sh
bash walkthrough.sh | tee out.txt
grep -q '"text_completion"' out.txt || { echo "walkthrough: the server's answer is not a completion" >&2; exit 1; }
echo "walkthrough: passed in $(( $(date +%s) - start )) s"
