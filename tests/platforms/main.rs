//! sd.wasm and its other builds on the platforms they are for: the browser page in headless
//! chromium, the component under jco, Bacalhau's engine and contract (wasi-runner) and a real
//! Bacalhau network. One test binary, so the library and tract are linked once for all of them.

#[path = "../common/mod.rs"]
mod common;

mod bacalhau;
mod browser;
mod browser_full_size;
mod browser_threads;
mod component;
mod wasi_runner;
