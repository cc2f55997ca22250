#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-quantize, llama-perplexity and llama-completion (CPU only) from
# the tree vendored in PyPI's llama-cpp-python sdist, as the peer to measure LowRA's kernels against and
# to check `lowra export` with (benchmark tools: not used by CI). llama-quantize makes the other GGUF
# types of the same model to compare against (Q4_0, Q2_K, …).
# Usage: scripts/build_llamacpp.sh [VERSION]   → prints the path of llama-bench
#   LLAMACPP_ARCH=avx2 scripts/build_llamacpp.sh  → an AVX2-only build (no AVX-512, whatever this CPU
#   has) in build-avx2/, the peer of LowRA's AVX2 path (`lowra bench decode --path avx2`)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-0.3.36}
DIR=runs/llamacpp-$VERSION
ARCH=${LLAMACPP_ARCH:-native}
case "$ARCH" in
native) BUILD=build FLAGS=(-DGGML_NATIVE=ON) ;;
avx2) BUILD=build-avx2 FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
    -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
    -DGGML_AVX_VNNI=OFF) ;;
*) echo "LLAMACPP_ARCH: native or avx2, not $ARCH" >&2; exit 2 ;;
esac
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
if [ ! -x "$DIR/$BUILD/bin/llama-bench" ] || [ ! -x "$DIR/$BUILD/bin/llama-quantize" ] ||
    [ ! -x "$DIR/$BUILD/bin/llama-perplexity" ] || [ ! -x "$DIR/$BUILD/bin/llama-completion" ]; then
    cmake -S "$DIR/vendor/llama.cpp" -B "$DIR/$BUILD" -DCMAKE_BUILD_TYPE=Release "${FLAGS[@]}" \
        -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF >&2
    cmake --build "$DIR/$BUILD" --target llama-bench llama-quantize llama-perplexity llama-completion -j "$(nproc)" >&2
fi
echo "$DIR/$BUILD/bin/llama-bench"
