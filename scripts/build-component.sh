#!/usr/bin/env bash
# Builds dist/sd-component.wasm: the library as a WebAssembly component (wasm32-wasip2,
# +simd128, the `dist` profile) implementing wit/sd.wit's world `sd` (src/component.rs).
# Hosts give it the model dir as a preopened directory and implement the `progress` import;
# tests/component/host.mjs is one (jco in Node).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo rustc --locked --lib --profile dist --target wasm32-wasip2 --crate-type cdylib >&2
mkdir -p dist
cp "$target_dir/wasm32-wasip2/dist/sd_wasm.wasm" dist/sd-component.wasm
echo "dist/sd-component.wasm: $(stat -c %s dist/sd-component.wasm) bytes" >&2
