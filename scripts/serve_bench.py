#!/usr/bin/env python3
"""Load on `lowra serve` over loopback (standard library only): streamed completions from S
concurrent clients, requests spread round-robin over the given models. Reports aggregate
generated tokens/s and time-to-first-token percentiles per concurrency, as a markdown table and
JSON. Bounded: each client sends --requests requests of --max-tokens tokens.

Usage: serve_bench.py --url http://127.0.0.1:8080 --models base,a,b,c --streams 1,4,16
       serve_bench.py --url ... --models a000,...,a099 --streams 4 --requests 50 (residency check)
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def stream_once(url, model, prompt, max_tokens):
    """One streamed completion: (seconds to first token, seconds in all, completion tokens, status)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    })
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        r.read()
        conn.close()
        return None, time.perf_counter() - t0, 0, r.status
    first = None
    tokens = 0
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        elif first is None and any(c.get("text") for c in event.get("choices", [])):
            first = time.perf_counter() - t0
    conn.close()
    return first, time.perf_counter() - t0, tokens, 200


def run(url, models, streams, requests, max_tokens, prompt):
    results = []
    lock = threading.Lock()
    counter = iter(range(streams * requests))

    def client():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            r = stream_once(url, models[i % len(models)], prompt, max_tokens)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[3] == 200]
    ttft = sorted(r[0] for r in ok if r[0] is not None)
    tokens = sum(r[2] for r in ok)

    def pct(p):
        return ttft[min(len(ttft) - 1, int(p * len(ttft)))] if ttft else float("nan")

    return {
        "streams": streams, "requests": len(results), "ok": len(ok), "tokens": tokens, "seconds": wall,
        "tokens_per_s": tokens / wall, "ttft_p50_s": pct(0.5), "ttft_p99_s": pct(0.99),
        "ttft_mean_s": statistics.mean(ttft) if ttft else float("nan"),
    }


def metric(url, name):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--models", required=True, help="comma-separated; requests go round-robin over them")
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt", default="The quality of mercy is not strained;")
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()
    models = a.models.split(",")
    rows = []
    for s in (int(x) for x in a.streams.split(",")):
        before = (metric(a.url, "lowra_decode_steps"), metric(a.url, "lowra_decode_rows"))
        r = run(a.url, models, s, a.requests, a.max_tokens, a.prompt)
        steps = metric(a.url, "lowra_decode_steps") - before[0]
        r["mean_batch"] = (metric(a.url, "lowra_decode_rows") - before[1]) / steps if steps else 0
        r["evictions"] = metric(a.url, "lowra_adapter_evictions_total")
        r["resident_adapters"] = metric(a.url, "lowra_resident_adapters")
        rows.append(r)
        print(f"streams {s}: {r['ok']}/{r['requests']} ok, {r['tokens_per_s']:.1f} tok/s", file=sys.stderr)
    one = rows[0]["tokens_per_s"]
    print(f"| streams | models | requests (ok) | tokens | tok/s | × 1 stream | mean batch | TTFT p50 | TTFT p99 | evictions |")
    print(f"|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['streams']} | {len(models)} | {r['requests']} ({r['ok']}) | {r['tokens']} | {r['tokens_per_s']:.1f} | "
              f"{r['tokens_per_s'] / one:.2f} | {r['mean_batch']:.1f} | {r['ttft_p50_s'] * 1000:.0f} ms | "
              f"{r['ttft_p99_s'] * 1000:.0f} ms | {r['evictions']:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"models": models, "max_tokens": a.max_tokens, "rows": rows}, f, indent=1)
    if any(r["ok"] < r["requests"] for r in rows):
        sys.exit("some requests failed")


if __name__ == "__main__":
    main()
