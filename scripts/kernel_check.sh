#!/usr/bin/env bash
# The C kernels' vector paths against the scalar reference (Tests/KernelCheck/kernel_check.c), in C
# alone: on this machine's paths (x86-64: AVX2, AVX-512), then cross-compiled for arm64 and run under
# qemu-user twice — a CPU with the dot-product instructions (`-cpu max`: the sdot integer kernels) and
# one without (`-cpu cortex-a53`: the plain NEON ones) — built by GCC and by the Swift toolchain's clang.
# `make test` runs it; it installs gcc-aarch64-linux-gnu and qemu-user when they are missing.
# Emulation checks results, not speed: NEON speed on real ARM hardware is unmeasured.
#
#   scripts/kernel_check.sh [SEED]     (default: a fresh seed, printed)
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-$(date +%s)}
out=.build/kernel-check
mkdir -p "$out"
sources=(Sources/CLowRAPacked/*.c Sources/CLowRAPacked/arch/*/*.c Tests/KernelCheck/kernel_check.c)
flags=(-O2 -std=gnu11 -Wall -Wextra -Wno-unknown-pragmas -Werror
  -I Sources/CLowRAPacked/include -I Sources/CLowRAPacked)

missing=()
for p in gcc-aarch64-linux-gnu qemu-user; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== $(uname -m) (this machine)"
cc "${flags[@]}" "${sources[@]}" -lm -lpthread -o "$out/host"
"$out/host" "$seed"

echo "== arm64, GCC $(aarch64-linux-gnu-gcc -dumpversion), under qemu-user"
aarch64-linux-gnu-gcc "${flags[@]}" -static "${sources[@]}" -lm -lpthread -o "$out/arm64-gcc"
for cpu in max cortex-a53; do qemu-aarch64 -cpu "$cpu" "$out/arm64-gcc" "$seed"; done

clang=$(command -v clang || true)
[ -x /opt/swift/usr/bin/clang ] && clang=/opt/swift/usr/bin/clang
if [ -n "$clang" ]; then
  echo "== arm64, $("$clang" --version | head -1), under qemu-user"
  rm -rf "$out/clang" && mkdir -p "$out/clang"
  for f in "${sources[@]}"; do
    "$clang" --target=aarch64-linux-gnu -isystem /usr/aarch64-linux-gnu/include "${flags[@]}" -c "$f" \
      -o "$out/clang/$(echo "$f" | tr / _).o"
  done
  aarch64-linux-gnu-gcc -static "$out"/clang/*.o -lm -lpthread -o "$out/arm64-clang"
  for cpu in max cortex-a53; do qemu-aarch64 -cpu "$cpu" "$out/arm64-clang" "$seed"; done
fi
