#!/usr/bin/env python3
"""Checks that every command in docs/usage.md parses: each `lowra SUBCOMMAND ...` line of its code
blocks (continuation lines joined) names a real subcommand, and every --flag on it appears in that
subcommand's --help. Run after a release build:  python3 scripts/check_usage_doc.py"""
import os
import re
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
lowra = os.path.join(root, ".build/release/lowra")
doc = os.environ.get("USAGE_DOC", os.path.join(root, "docs/usage.md"))
if not os.path.exists(lowra):
    sys.exit("check_usage_doc: build first (make build)")

text = open(doc, encoding="utf-8").read()
blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
commands = []
for block in blocks:
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.split("\n"):
        line = line.strip()
        line = re.sub(r"^mpirun\s.*?(?=(?:\.build/release/)?lowra\s)", "", line)  # mpirun -np 2 lowra ...
        m = re.match(r"(?:\.build/release/)?lowra\s+(.*)", line)
        if m:
            commands.append(m.group(1))

helps = {}
def help_for(words):
    key = " ".join(words)
    if key not in helps:
        r = subprocess.run([lowra] + words + ["--help"], capture_output=True, text=True)
        helps[key] = (r.returncode, r.stdout + r.stderr)
    return helps[key]

bad = []
for cmd in commands:
    words = cmd.split()
    sub = [w for w in words[:2] if re.fullmatch(r"[a-z]+", w)]
    # the longest prefix of plain words that is a subcommand (e.g. `card show`, `bench decode`)
    for n in (2, 1):
        status, out = help_for(sub[:n]) if len(sub) >= n else (1, "")
        if status == 0 and re.search(r"USAGE: lowra " + re.escape(" ".join(sub[:n])) + r"\b", out):
            break
    else:
        bad.append(f"lowra {cmd}: no such subcommand")
        continue
    flags = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", out))
    for f in re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", cmd):
        if f not in flags:
            bad.append(f"lowra {' '.join(sub[:n])}: {f} is not in its --help")
for b in bad:
    print(b)
print(f"check_usage_doc: {len(commands)} commands, {len(bad)} problems", file=sys.stderr)
sys.exit(1 if bad else 0)
