#!/usr/bin/env bash
# Runs every test: builds dist/sd.wasm (the artifact under test) and the browser page's module
# (web/pkg), then `cargo test`, whose integration tests run sd.wasm under wasmtime against
# diffusers' recorded outputs, the page in headless chromium and the component (wit/) under jco
# against sd.wasm's bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build-wasm.sh
scripts/build-web.sh
scripts/build-component.sh
export SD_COMPONENT=$PWD/dist/sd-component.wasm
export WASMTIME=${WASMTIME:-$(scripts/wasmtime-path)}
export SD_WASM=${SD_WASM:-$PWD/dist/sd.wasm}
# Precompile once (and time it: docs/building.md records the cold compile time); tests run the .cwasm.
start=$(date +%s%N)
"$WASMTIME" compile dist/sd.wasm -o dist/sd.cwasm
echo "wasmtime cold compile of dist/sd.wasm: $(( ($(date +%s%N) - start) / 1000000 )) ms, $(stat -c %s dist/sd.wasm) bytes"
export SD_CWASM=$PWD/dist/sd.cwasm
# Bacalhau's engine and contract without a network (tests/platforms/wasi_runner.rs).
export WASI_RUNNER=${WASI_RUNNER:-$(scripts/build-wasi-runner.sh)}
# A real Bacalhau v1.9.3 (tools/bacalhau) for tests/platforms/bacalhau.rs, which starts and stops its own
# node. Cached under ~/.cache/sd-wasm after the first build (about 5 minutes on 2 cores).
export BACALHAU_BIN=${BACALHAU_BIN:-$(scripts/build-bacalhau.sh | tail -n1)}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# sd-kernels' SIMD128 code (the GEMM tile against tract's own wasm kernel) exists only in wasm:
# its tests run under wasmtime. Skipped when arguments pick other tests.
if [[ $# -eq 0 ]]; then
  CARGO_TARGET_WASM32_WASIP1_RUNNER="$WASMTIME run" cargo test --locked --release -p sd-kernels --target wasm32-wasip1 2>&1 | tee -a "$log"
  kernels=${PIPESTATUS[0]}
  [[ $status -ne 0 ]] || status=$kernels
fi
set -e
# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
