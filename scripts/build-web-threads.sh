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
# The memory may grow to 4 GiB, as a single-threaded tab's (rustc's default for a shared
# memory is 1 GiB).
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
  --target-dir "$target_dir/web-threads" -Z build-std=panic_abort,std --crate-type cdylib >&2
rm -rf web/pkg-threads
"$root/bin/wasm-bindgen" --target web --no-typescript --out-dir web/pkg-threads \
  "$target_dir/web-threads/wasm32-unknown-unknown/dist/sd_wasm.wasm"
echo "web/pkg-threads: $(stat -c %s web/pkg-threads/sd_wasm_bg.wasm) bytes of wasm" >&2
