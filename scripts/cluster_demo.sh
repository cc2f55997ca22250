#!/usr/bin/env bash
# N `lowra serve` replicas over one shelf behind HAProxy, on loopback (docs/past-one-machine.md).
#
#   scripts/cluster_demo.sh QUANTIZED_DIR SHELF_DIR [REPLICAS=2] [PORT=8000]
#
# Replicas listen on PORT+1 … PORT+N, HAProxy on PORT with deploy/haproxy.cfg (one `server` line per
# replica). Runs until Ctrl-C. With LOAD=1 it instead sends scripts/cluster_load.py's requests through
# HAProxy, prints the throughput and each replica's share as JSON, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,9p "$0"; exit 2; }
base=$1 shelf=$2 n=${3:-2} port=${4:-8000}
lowra=${LOWRA:-.build/release/lowra}
[ -x "$lowra" ] || { echo "build lowra first: swift build -c release --product lowra" >&2; exit 2; }
command -v haproxy >/dev/null || { echo "haproxy is missing: apt install haproxy" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# Replicas on one host share its cores: each gets its share of threads unless LOWRA_THREADS is set.
threads=${LOWRA_THREADS:-$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))}
# The committed config with its two example servers replaced by one line per replica.
grep -v '^    server replica' deploy/haproxy.cfg > "$work/haproxy.cfg"
ports=()
for i in $(seq 1 "$n"); do
  p=$((port + i))
  ports+=("$p")
  echo "    server replica$i 127.0.0.1:$p" >> "$work/haproxy.cfg"
  LOWRA_THREADS=$threads OPENBLAS_NUM_THREADS=$threads \
    "$lowra" serve --model "$base" --shelf "$shelf" --port "$p" > "$work/replica$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 1 "$n"); do
  until grep -q "listening on" "$work/replica$i.log"; do
    kill -0 "${pids[$((i - 1))]}" 2>/dev/null || { cat "$work/replica$i.log" >&2; exit 1; }
    sleep 0.2
  done
done
LOWRA_FRONTEND="127.0.0.1:$port" haproxy -db -f "$work/haproxy.cfg" &
pids+=($!)
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
echo "HAProxy on http://127.0.0.1:$port in front of $n replicas (ports ${ports[*]}; $threads threads each)" >&2
if [ "${LOAD:-0}" = 1 ]; then
  python3 scripts/cluster_load.py "$port" "$shelf" "$(IFS=,; echo "${ports[*]}")" ${LOAD_ARGS:-}
else
  wait
fi
