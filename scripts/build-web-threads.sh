#!/usr/bin/env bash
# Builds the browser page's *threaded* module into web/pkg-threads/ (sd_wasm.js +
# sd_wasm_bg.wasm + wasm-bindgen-rayon's worker snippet): the same library as web/pkg/, with
# WebAssembly threads (a shared memory, +atomics) and tract's kernels on a pool of Web Workers
# (wasm-bindgen-rayon; src/web_threads.rs, src/models/threads.rs). web/worker.js uses it when
# the page is cross-origin isolated (web/serve.py sends the headers) and it exists; otherwise
# web/pkg/. Same bytes out at any thread count.
# A threaded std needs a nightly Rust with rust-src (-Z build-std, as wasm-bindgen-rayon's
# README says): the pinned nightly below is installed once (SD_NIGHTLY overrides it).
# Its own target dir ($CARGO_TARGET_DIR/web-threads): the flags and std differ from web/pkg's.
# The link: this nightly's rustc no longer asks wasm-ld for a shared memory when +atomics is
# on, so the module's memory is made shared and imported here (else it cannot be sent to the
# pool's workers), up to 4 GiB as a single-threaded tab's; wasm-bindgen's thread transform needs
# the TLS symbols and __heap_base exported.
set -euo pipefail
cd "$(dirname "$0")/.."
toolchain=${SD_NIGHTLY:-nightly-2026-05-20}
target_dir=${CARGO_TARGET_DIR:-target}
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
root=$HOME/.cache/sd-wasm/wasm-bindgen-$version
if [ ! -x "$root/bin/wasm-bindgen" ]; then
  cargo install --locked wasm-bindgen-cli --version "$version" --root "$root" --target-dir "$target_dir/wasm-bindgen-cli" >&2
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$toolchain" --profile minimal --component rust-src >&2
fi
rustup component list --toolchain "$toolchain" --installed | grep -q '^rust-src' \
  || rustup component add rust-src --toolchain "$toolchain" >&2
RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 -C link-arg=--max-memory=4294967296" \
  cargo "+$toolchain" rustc --locked --lib --profile dist --target wasm32-unknown-unknown \
  --target-dir "$target_dir/web-threads" -Z build-std=panic_abort,std --crate-type cdylib -- \
  -C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--export=__wasm_init_tls \
  -C link-arg=--export=__tls_size -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base \
  -C link-arg=--export=__heap_base -C link-arg=--export=__data_end >&2
rm -rf web/pkg-threads
"$root/bin/wasm-bindgen" --target web --no-typescript --remove-name-section --out-dir web/pkg-threads \
  "$target_dir/web-threads/wasm32-unknown-unknown/dist/sd_wasm.wasm"
echo "web/pkg-threads: $(stat -c %s web/pkg-threads/sd_wasm_bg.wasm) bytes of wasm" >&2
