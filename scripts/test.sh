#!/usr/bin/env bash
# Runs every test: builds dist/sd.wasm (the artifact under test) and the browser page's modules
# (web/pkg, and the threaded web/pkg-threads), then `cargo test`, whose integration tests run
# sd.wasm under wasmtime against diffusers' recorded outputs, the page in headless chromium and
# the component (wit/) under jco against sd.wasm's bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time, so a CI log says where a cold run's minutes went.
t0=$(date +%s)
phase_start=$t0
phase() {
  local now
  now=$(date +%s)
  echo "test.sh: $1 took $((now - phase_start)) s (at $((now - t0)) s)" >&2
  phase_start=$now
}
scripts/install-deps.sh
phase "install-deps"
# The Go tools build beside the Rust builds: a cold Bacalhau build is the longest single step,
# and the Rust builds leave a core idle in their single-threaded fat-LTO links. Under `nice`
# (build-bacalhau.sh), so cargo keeps the CPU when both want it.
#   WASI_RUNNER: Bacalhau's engine and contract without a network (tests/platforms/wasi_runner.rs).
#   BACALHAU_BIN: a real Bacalhau v1.9.3 (tools/bacalhau) for tests/platforms/bacalhau.rs, which
#   starts and stops its own node; cached under ~/.cache/sd-wasm after the first build.
go_tools() {
  local start=$(date +%s)
  [[ -n "${WASI_RUNNER:-}" ]] || WASI_RUNNER=$(scripts/build-wasi-runner.sh)
  [[ -n "${BACALHAU_BIN:-}" ]] || BACALHAU_BIN=$(scripts/build-bacalhau.sh | tail -n1)
  echo "test.sh: Go tools (in the background) took $(( $(date +%s) - start )) s" >&2
  printf '%s\n%s\n' "$WASI_RUNNER" "$BACALHAU_BIN"
}
go_out=$(mktemp)
go_log=$(mktemp)
log=$(mktemp)
go_tools > "$go_out" 2> "$go_log" &
go_pid=$!
trap 'kill "$go_pid" 2>/dev/null || true; rm -f "$go_out" "$go_log" "$log"' EXIT
scripts/build-wasm.sh
phase "dist/sd.wasm"
scripts/build-web.sh
phase "web/pkg, web/pkg-threads"
scripts/build-component.sh
phase "component"
export SD_COMPONENT=$PWD/dist/sd-component.wasm
export WASMTIME=${WASMTIME:-$(scripts/wasmtime-path)}
export SD_WASM=${SD_WASM:-$PWD/dist/sd.wasm}
# Precompile once (and time it: docs/building.md records the cold compile time); tests run the .cwasm.
start=$(date +%s%N)
"$WASMTIME" compile dist/sd.wasm -o dist/sd.cwasm
echo "wasmtime cold compile of dist/sd.wasm: $(( ($(date +%s%N) - start) / 1000000 )) ms, $(stat -c %s dist/sd.wasm) bytes"
export SD_CWASM=$PWD/dist/sd.cwasm
# The test binaries build while the Go tools may still be building; the tests need both.
cargo test --locked --workspace --no-run "$@" >&2
phase "test binaries"
go_status=0
wait "$go_pid" || go_status=$?
cat "$go_log" >&2
[[ $go_status -eq 0 ]] || { echo "test.sh: building the Go tools failed" >&2; exit "$go_status"; }
{ read -r WASI_RUNNER; read -r BACALHAU_BIN; } < "$go_out"
export WASI_RUNNER BACALHAU_BIN
phase "waiting for the Go tools"
set +e
cargo test --locked --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
phase "tests"
# sd-kernels' SIMD128 code (the GEMM tile against tract's own wasm kernel) exists only in wasm:
# its tests run under wasmtime. Skipped when arguments pick other tests.
if [[ $# -eq 0 ]]; then
  CARGO_TARGET_WASM32_WASIP1_RUNNER="$WASMTIME run" cargo test --locked --release -p sd-kernels --target wasm32-wasip1 2>&1 | tee -a "$log"
  kernels=${PIPESTATUS[0]}
  [[ $status -ne 0 ]] || status=$kernels
  phase "kernel tests under wasmtime"
fi
set -e
# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
