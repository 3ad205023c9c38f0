#!/usr/bin/env bash
# Runs every test: builds dist/sd.wasm (the artifact under test), then `cargo test`, whose
# integration tests run it under wasmtime against diffusers' recorded outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build-wasm.sh
export WASMTIME=${WASMTIME:-$(scripts/wasmtime-path)}
export SD_WASM=${SD_WASM:-$PWD/dist/sd.wasm}
# Precompile once (and time it: the README records the cold compile time); tests run the .cwasm.
start=$(date +%s%N)
"$WASMTIME" compile dist/sd.wasm -o dist/sd.cwasm
echo "wasmtime cold compile of dist/sd.wasm: $(( ($(date +%s%N) - start) / 1000000 )) ms, $(stat -c %s dist/sd.wasm) bytes"
export SD_CWASM=$PWD/dist/sd.cwasm
cargo test --locked "$@"
