#!/usr/bin/env bash
# Builds the shipped module: dist/sd.wasm (wasm32-wasip1, +simd128 from .cargo/config.toml,
# size-optimized `dist` profile, minimal `name` section kept for Bacalhau).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --locked --profile dist --target wasm32-wasip1 --bin sd
mkdir -p dist
python3 scripts/wasm_names.py "$target_dir/wasm32-wasip1/dist/sd.wasm" dist/sd.wasm sd
