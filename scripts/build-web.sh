#!/usr/bin/env bash
# Builds the browser page's module: the same library for wasm32-unknown-unknown (+simd128 from
# .cargo/config.toml, the `dist` profile as dist/sd.wasm), with src/web.rs's wasm-bindgen
# front end, into web/pkg/ (sd_wasm.js + sd_wasm_bg.wasm). Then `web/` is the whole site:
#   python3 web/serve.py            # http://localhost:8000/
# wasm-bindgen-cli must match the wasm-bindgen crate exactly; it is installed once into
# ~/.cache/sd-wasm (CI reuses it).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
root=$HOME/.cache/sd-wasm/wasm-bindgen-$version
if [ ! -x "$root/bin/wasm-bindgen" ]; then
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  cargo install --locked wasm-bindgen-cli --version "$version" --root "$root" --target-dir "$target_dir/wasm-bindgen-cli" >&2
fi
# The library alone, as a cdylib: [lib] stays an rlib so the WASI build does not link it twice.
cargo rustc --locked --lib --profile dist --target wasm32-unknown-unknown --crate-type cdylib >&2
"$root/bin/wasm-bindgen" --target web --no-typescript --out-dir web/pkg \
  "$target_dir/wasm32-unknown-unknown/dist/sd_wasm.wasm"
echo "web/pkg: $(stat -c %s web/pkg/sd_wasm_bg.wasm) bytes of wasm" >&2
# Then the threaded build beside it (web/pkg-threads/, used when the page is cross-origin
# isolated): nightly Rust and a std rebuilt with atomics. SD_WEB_THREADS=0 skips it and removes
# an older one (a quicker build; the page then runs web/pkg everywhere, never a stale threaded
# build beside a newer web/pkg).
if [[ "${SD_WEB_THREADS:-1}" != 0 ]]; then
  scripts/build-web-threads.sh
else
  rm -rf web/pkg-threads
fi
