#!/usr/bin/env python3
"""Load through the balancer: completions for every adapter the replicas serve, a few at a time.

Usage: cluster_load.py FRONT_PORT SHELF_DIR REPLICA_PORT[,REPLICA_PORT…] [--requests 32] [--concurrency 8]
       [--tokens 32]
Prints one JSON object: requests, seconds, generated tokens per second through the balancer, and each
replica's share (requests and tokens from its /metrics). Standard library only.
"""
import argparse
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import cluster_check


def call(port, method, path, body=None):
    status, data = cluster_check.call(port, method, path, body, timeout=600)
    if status != 200:
        raise SystemExit(f"{method} {path} on {port}: HTTP {status}: {data[:200]}")
    return data


def replica_totals(port):
    text = call(port, "GET", "/metrics")
    total = lambda name: sum(int(float(v)) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)", text, re.M))
    return {"requests": total("lowra_requests_total"), "tokens": total("lowra_generated_tokens_total")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("front", type=int)
    p.add_argument("shelf")
    p.add_argument("replicas")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    a = p.parse_args()
    # The adapters the replicas serve (a refused one on the shelf is left out).
    served = json.loads(call(a.front, "GET", "/v1/models"))["data"]
    names = sorted({m["name"] for m in served if "name" in m})
    ports = [int(x) for x in a.replicas.split(",")]
    before = [replica_totals(q) for q in ports]

    def one(i):
        body = {"model": names[i % len(names)], "prompt": f"Story {i}: once upon a time", "max_tokens": a.tokens,
                "temperature": 0}
        return json.loads(call(a.front, "POST", "/v1/completions", body))["usage"]["completion_tokens"]

    started = time.time()
    with ThreadPoolExecutor(a.concurrency) as pool:
        tokens = sum(pool.map(one, range(a.requests)))
    seconds = time.time() - started
    after = [replica_totals(q) for q in ports]
    print(json.dumps({
        "replicas": len(ports), "adapters": len(names), "requests": a.requests, "concurrency": a.concurrency,
        "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
        "per_replica": [{k: after[i][k] - before[i][k] for k in after[i]} for i in range(len(ports))],
    }))


if __name__ == "__main__":
    main()
