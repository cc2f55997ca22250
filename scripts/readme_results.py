#!/usr/bin/env python3
"""Splice experiment reports into the README.

Every block of README.md between
    <!-- results: docs/NAME/results.md -->
and
    <!-- /results -->
is replaced by that results.md (written by `lowra experiment`): its title dropped, its
headings moved under the README's, its links made relative to the repository root, and its
plots shown as images. Run after copying a sweep's report into docs/:
    python3 scripts/readme_results.py [README.md]
"""
import os
import re
import sys

readme = sys.argv[1] if len(sys.argv) > 1 else "README.md"
text = open(readme, encoding="utf-8").read()
pattern = re.compile(r"(<!-- results: (\S+) -->\n)(.*?)(<!-- /results -->)", re.S)


def render(path):
    folder = os.path.dirname(path)
    lines = open(path, encoding="utf-8").read().rstrip("\n").split("\n")
    out = []
    for line in lines:
        if line.startswith("# "):
            continue  # the README gives the title
        if line.startswith("## "):
            line = "#### " + line[3:]
        if line.startswith("Plots: "):
            for label, target in re.findall(r"\[([^\]]+)\]\(([^)]+)\)", line):
                out.append(f"![{label}]({folder}/{target})")
                out.append("")
            continue
        line = re.sub(r"\]\((?!https?:)([^)/]+\.(?:svg|md|json))\)", lambda m: f"]({folder}/{m.group(1)})", line)
        out.append(line)
    while out and out[0] == "":
        out.pop(0)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def replace(m):
    path = m.group(2)
    if not os.path.exists(path):
        sys.exit(f"readme_results: {path} does not exist")
    return m.group(1) + render(path) + m.group(4)


new, n = pattern.subn(replace, text)
if n == 0:
    sys.exit("readme_results: no <!-- results: ... --> blocks in " + readme)
tmp = readme + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(new)
os.replace(tmp, readme)
print(f"readme_results: {n} block(s) written", file=sys.stderr)
