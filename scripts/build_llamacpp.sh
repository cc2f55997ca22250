#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-quantize, llama-perplexity and llama-completion (CPU only) from
# the tree vendored in PyPI's llama-cpp-python sdist, as the peer to measure LowRA's kernels against and
# to check `lowra export` with (benchmark tools: not used by CI). llama-quantize makes the other GGUF
# types of the same model to compare against (Q4_0, Q2_K, …).
# Usage: scripts/build_llamacpp.sh [VERSION]   → prints the path of llama-bench
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-0.3.36}
DIR=runs/llamacpp-$VERSION
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake >&2; }
mkdir -p "$DIR"
if [ ! -d "$DIR/vendor/llama.cpp" ]; then
    # The sdist's link and sha256 from PyPI's simple index.
    link=$(curl -sf https://pypi.org/simple/llama-cpp-python/ |
        grep -o "href=\"[^\"]*llama_cpp_python-$VERSION.tar.gz#sha256=[0-9a-f]*\"" | head -1 |
        sed 's/^href="//; s/"$//')
    [ -n "$link" ] || { echo "llama-cpp-python $VERSION has no sdist on PyPI" >&2; exit 1; }
    set -- "${link%%#*}" "${link##*sha256=}"
    curl -sfL "$1" -o "$DIR/sdist.tar.gz"
    echo "$2  $DIR/sdist.tar.gz" | sha256sum -c --quiet
    tar -xzf "$DIR/sdist.tar.gz" -C "$DIR" --strip-components=1
fi
if [ ! -x "$DIR/build/bin/llama-bench" ] || [ ! -x "$DIR/build/bin/llama-quantize" ] ||
    [ ! -x "$DIR/build/bin/llama-perplexity" ] || [ ! -x "$DIR/build/bin/llama-completion" ]; then
    cmake -S "$DIR/vendor/llama.cpp" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF >&2
    cmake --build "$DIR/build" --target llama-bench llama-quantize llama-perplexity llama-completion -j "$(nproc)" >&2
fi
echo "$DIR/build/bin/llama-bench"
