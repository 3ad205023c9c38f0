#!/usr/bin/env bash
# CPU seconds per UNet evaluation of sd.wasm modules under wasmtime, robust to other load on
# the machine: each config runs `--bench-unet` with --runs 1 and with --runs (1+N); the
# difference of the processes' user+sys CPU time, divided by N, is one evaluation (load and
# cancel out; each module is precompiled first, untimed, so no run pays wasmtime's parallel
# compile). Wall times (the JSON lines) are printed too.
#   scripts/cpu-bench.sh MODELS LATENT N MODULE[:SD_WASM_OPS] ...
set -euo pipefail
cd "$(dirname "$0")/.."
models=$1 latent=$2 n=$3
shift 3
wasmtime=${WASMTIME:-$(scripts/wasmtime-path)}
cpu() { # module ops runs -> "cpu_seconds wall_json"
  local tf json
  tf=$(mktemp)
  json=$(/usr/bin/time -o "$tf" -f "%U %S" "$wasmtime" run --allow-precompiled -W max-memory-size=4294967296 --env "SD_WASM_OPS=$2" \
      --dir "$models::/models" "$1" --bench-unet --latent "$latent" --runs "$3" --models /models 2>/dev/null | grep '^{' | tr -d ' ')
  echo "$(awk '{print $1 + $2}' "$tf") $json"
  rm -f "$tf"
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for spec in "$@"; do
  wasm=${spec%%:*}; ops=default
  [[ "$spec" == *:* ]] && ops=${spec#*:}
  module="$scratch/$(basename "$wasm" .wasm).cwasm"
  [[ -f "$module" ]] || "$wasmtime" compile "$wasm" -o "$module"
  read -r c1 j1 < <(cpu "$module" "$ops" 1)
  read -r c2 j2 < <(cpu "$module" "$ops" $((1 + n)))
  per=$(python3 -c "print(f'{($c2 - $c1) / $n:.2f}')")
  echo "$(basename "$module") ops=$ops latent=$latent cpu_s_per_eval=$per (cpu $c1 / $c2) wall: $j2"
done
