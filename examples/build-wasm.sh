#!/usr/bin/env bash
# Builds the C guests in examples/c into examples/wasm (the built files are committed, so
# tests and the demo run without clang). Installs Debian's wasm toolchain when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v clang >/dev/null 2>&1 || { [ ! -d /usr/lib/wasm32-wasi ] && [ ! -d /usr/share/wasi-sysroot ]; }; then
  echo "== installing clang lld wasi-libc libclang-rt-14-dev-wasm32"
  apt-get install -y -q clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null
fi

mkdir -p wasm
for source in c/*.c; do
  name=$(basename "$source" .c)
  clang --target=wasm32-wasi -O2 -Wall -Werror -Wl,--strip-all -o "wasm/$name.wasm" "$source"
  echo "built wasm/$name.wasm ($(stat -c %s "wasm/$name.wasm") bytes)"
done
