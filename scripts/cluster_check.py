#!/usr/bin/env python3
"""Two `lowra serve` replicas behind HAProxy (deploy/haproxy.cfg) on loopback, checked end to end.

Usage: cluster_check.py LOWRA_BINARY QUANTIZED_DIR SHELF_DIR [--json OUT]

1. Affinity: requests for every adapter on the shelf (text and chat completions, whole and streamed) go
   through HAProxy; each replica's per-adapter request counters (/metrics) show the share of each
   adapter's requests on its home replica (must be >= 95%), and every answer equals `lowra generate`
   (greedy; `--chat` for chat completions).
2. Failover: the replica serving a long stream is killed with SIGKILL mid-stream; the client must see an
   error within 15 s (not a hang), later requests for the dead replica's adapters must be answered by the
   other replica with the same text, and the shelf's files must be unchanged.
Prints one JSON object with the measurements; exits 1 on the first failed check. Standard library only.
"""
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "The king said"
TOKENS = 8


def fail(message):
    print(f"cluster check failed: {message}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """`lowra serve --port 0` on the shared shelf; the port is read from its log."""

    def __init__(self, lowra, base, shelf, name):
        self.name = name
        self.log = []
        self.proc = subprocess.Popen(
            [lowra, "serve", "--model", base, "--shelf", shelf, "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 90
        while self.port is None and time.time() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if self.port is None:
            fail(f"{name} did not start: {''.join(self.log)}")

    def _read(self):
        for line in self.proc.stdout:
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def call(port, method, path, body=None, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read().decode()
    c.close()
    return r.status, data


def completion(port, model, chat, stream):
    """The answer's text (streamed answers joined from their events)."""
    if chat:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}
    else:
        path, body = "/v1/completions", {"prompt": PROMPT}
    body.update({"model": model, "max_tokens": TOKENS, "temperature": 0, "stream": stream})
    status, data = call(port, "POST", path, body)
    if status != 200:
        fail(f"{model} ({path}, stream={stream}): HTTP {status}: {data}")
    if not stream:
        choice = json.loads(data)["choices"][0]
        return choice["message"]["content"] if chat else choice["text"]
    if not data.rstrip().endswith("data: [DONE]"):
        fail(f"{model}: the stream did not end with [DONE]: {data[-200:]}")
    text = ""
    for line in data.splitlines():
        if line.startswith("data: {"):
            choice = json.loads(line[6:])["choices"]
            if choice:
                text += (choice[0].get("delta", {}).get("content") or "") if chat else choice[0].get("text", "")
    return text


def request_counts(port):
    """lowra_requests_total per adapter name (its label is name@version; both stream values added)."""
    status, text = call(port, "GET", "/metrics")
    if status != 200:
        fail(f"/metrics on {port}: HTTP {status}")
    counts = {}
    for m in re.finditer(r'^lowra_requests_total\{([^}]*)\} (\d+)', text, re.M):
        model = re.search(r'model="([^"]*)"', m.group(1)).group(1).split("@")[0]
        counts[model] = counts.get(model, 0) + int(m.group(2))
    return counts


def shelf_digest(shelf):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(shelf)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(os.path.relpath(p, shelf).encode() + b"\0" + open(p, "rb").read())
    return h.hexdigest()


def main():
    if len(sys.argv) < 4:
        fail(__doc__)
    lowra, base, shelf = sys.argv[1:4]
    out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    adapters = sorted(d for d in os.listdir(shelf) if os.path.isfile(os.path.join(shelf, d, "adapter_card.json")))
    names = [json.load(open(os.path.join(shelf, d, "adapter_card.json")))["name"] for d in adapters]
    digest = shelf_digest(shelf)

    # The reference answers.
    reference = {}
    for d, name in zip(adapters, names):
        for chat in (False, True):
            args = [lowra, "generate", "--model", base, "--adapter", os.path.join(shelf, d), "--prompt", PROMPT,
                    "--max-new-tokens", str(TOKENS), "--temperature", "0"] + (["--chat"] if chat else [])
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"lowra generate for {name}: {r.stderr}")
            reference[(name, chat)] = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout

    replicas = [Replica(lowra, base, shelf, f"replica{i + 1}") for i in range(2)]
    front = free_port()
    env = dict(os.environ, LOWRA_FRONTEND=f"127.0.0.1:{front}",
               LOWRA_REPLICA1=f"127.0.0.1:{replicas[0].port}", LOWRA_REPLICA2=f"127.0.0.1:{replicas[1].port}")
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", os.path.join(REPO, "deploy", "haproxy.cfg")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                if call(front, "GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or haproxy.poll() is not None:
                log = haproxy.stderr.read() if haproxy.poll() is not None else ""
                fail(f"HAProxy did not answer on {front}: {log}")
            time.sleep(0.1)

        # 1. Affinity and equality: 4 requests per adapter (text/chat × whole/streamed), 4 at a time.
        jobs = [(n, chat, stream) for n in names for chat in (False, True) for stream in (False, True)]
        started = time.time()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda j: completion(front, *j), jobs))
        seconds = time.time() - started
        for (n, chat, stream), text in zip(jobs, answers):
            if text != reference[(n, chat)]:
                fail(f"{n} (chat={chat}, stream={stream}): {text!r} != lowra generate's {reference[(n, chat)]!r}")
        counts = [request_counts(r.port) for r in replicas]
        home, share = {}, {}
        for n in names:
            per = [c.get(n, 0) for c in counts]
            home[n] = max(range(2), key=lambda i: per[i])
            share[n] = per[home[n]] / max(1, sum(per))
            if sum(per) != 4:
                fail(f"{n}: the replicas counted {per} requests, not 4")
            if share[n] < 0.95:
                fail(f"{n}: {per} requests per replica, {share[n]:.0%} on its home replica")
        status, listing = call(front, "GET", "/v1/models")
        listed = {m["id"].split("@")[0] for m in json.loads(listing)["data"]} if status == 200 else set()
        if not set(names) <= listed:
            fail(f"/v1/models through HAProxy lists {sorted(listed)}, not every adapter")

        # 2. Failover: kill the home replica of the first adapter while it streams a long answer.
        victim_name = names[0]
        victim = replicas[home[victim_name]]
        survivor = replicas[1 - home[victim_name]]
        moved = [n for n in names if home[n] == home[victim_name]]
        c = http.client.HTTPConnection("127.0.0.1", front, timeout=15)
        c.request("POST", "/v1/completions", body=json.dumps(
            {"model": victim_name, "prompt": PROMPT, "max_tokens": 400, "temperature": 0, "stream": True}),
            headers={"Content-Type": "application/json"})
        r = c.getresponse()
        first = r.readline()
        if r.status != 200 or not first.startswith(b"data: "):
            fail(f"the long stream did not start: HTTP {r.status} {first!r}")
        victim.proc.kill()
        killed = time.time()
        victim.proc.wait()
        error = None
        try:
            rest = r.read()
            if b"data: [DONE]" in rest:
                fail("the stream of the killed replica ended as if complete")
            error = "the stream ended without [DONE]"
        except (http.client.HTTPException, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        stream_error_seconds = time.time() - killed
        if stream_error_seconds > 15:
            fail(f"the client waited {stream_error_seconds:.1f} s for the killed replica")

        failover_seconds = None
        for n in moved:
            text = completion(front, n, False, False)
            if failover_seconds is None:
                failover_seconds = time.time() - killed
            if text != reference[(n, False)]:
                fail(f"{n} after failover: {text!r} != {reference[(n, False)]!r}")
        after = request_counts(survivor.port)
        for n in moved:
            if after.get(n, 0) < 1:
                fail(f"{n} was not served by the surviving replica after failover")
        if shelf_digest(shelf) != digest:
            fail("the shelf's files changed")

        result = {
            "adapters": len(names), "requests": len(jobs), "seconds": round(seconds, 2),
            "home_replica": {n: replicas[home[n]].name for n in names},
            "home_share": {n: share[n] for n in names},
            "min_home_share": min(share.values()),
            "killed": victim.name, "moved_adapters": moved,
            "client_error": error, "client_error_seconds": round(stream_error_seconds, 3),
            "failover_seconds": round(failover_seconds, 3), "shelf_unchanged": True,
        }
        print(json.dumps(result, indent=1))
        if out:
            with open(out, "w") as f:
                json.dump(result, f, indent=1)
    finally:
        haproxy.terminate()
        for rep in replicas:
            rep.stop()


if __name__ == "__main__":
    main()
