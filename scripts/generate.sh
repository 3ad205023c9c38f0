#!/usr/bin/env bash
# Generates a picture with dist/sd.wasm under wasmtime, like a user would:
#   scripts/generate.sh --prompt "a lighthouse at dusk" --seed 42
# MODELS (default: the bundled tiny model fixtures/tiny) is mounted at /models, OUT
# (default: out/) at /outputs. Installs and builds what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${MODELS:-fixtures/tiny}
out=${OUT:-out}
scripts/install-deps.sh 2>/dev/null
[ -f dist/sd.wasm ] || scripts/build-wasm.sh
mkdir -p "$out"
exec "$(scripts/wasmtime-path)" run -W max-memory-size=4294967296 \
  --dir "$models::/models" --dir "$out::/outputs" dist/sd.wasm -- "$@"
