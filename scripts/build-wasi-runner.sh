#!/usr/bin/env bash
# Builds wasi-runner/ (wazero v1.12.0 with Bacalhau v1.9.3's settings) and prints its path.
# The Go module and build caches live under ~/.cache/sd-wasm/go so CI runs on one machine share them.
set -euo pipefail
cd "$(dirname "$0")/../wasi-runner"
export PATH="/usr/local/go/bin:$PATH"
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/sd-wasm/go/mod} GOCACHE=${GOCACHE:-$HOME/.cache/sd-wasm/go/build}
out=${WASI_RUNNER_BIN:-$HOME/.cache/sd-wasm/bin/wasi-runner}
mkdir -p "$(dirname "$out")"
go build -trimpath -o "$out" . >&2
echo "$out"
