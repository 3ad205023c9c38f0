#!/usr/bin/env bash
# Builds the shipped module: dist/sd.wasm (wasm32-wasip1, +simd128 from .cargo/config.toml,
# size-optimized `dist` profile), then tools/wasm-ship: float selects rewritten around wazero
# v1.12.0's miscompile (Bacalhau's engine) and a minimal `name` section kept for Bacalhau.
#   --relaxed   builds dist/sd-relaxed.wasm instead: +relaxed-simd, so tract's f32 matmul
#               kernels use relaxed FMA. For wasmtime and browsers only: wazero (Bacalhau)
#               cannot compile it. Its own target dir, since the flags change every crate.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
name=sd
if [[ "${1:-}" == "--relaxed" ]]; then
  target_dir="$target_dir/relaxed"
  name=sd-relaxed
  export RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd"
fi
CARGO_TARGET_DIR="$target_dir" cargo build --locked --profile dist --target wasm32-wasip1 --bin sd
mkdir -p dist
# tools/wasm-ship is a workspace member: same Cargo.lock, built for the host into the usual target dir.
env -u RUSTFLAGS cargo build --locked --release -p wasm-ship -q
"${CARGO_TARGET_DIR:-target}/release/wasm-ship" "$target_dir/wasm32-wasip1/dist/sd.wasm" "dist/$name.wasm" sd
