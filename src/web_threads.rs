//! The threaded browser build's pool (web/pkg-threads/, scripts/build-web-threads.sh:
//! wasm32-unknown-unknown with `+atomics`, a shared memory). Its threads are Web Workers that
//! wasm-bindgen-rayon starts as rayon's global pool; tract and our attention op run on it
//! (src/models/threads.rs). The page's worker (web/worker.js) calls [`init_threads`] once,
//! awaits it, then generates as in the single-threaded build: the bytes are the same.
//! The worker that calls `generate` only waits while the pool computes, and only that worker
//! touches JS objects (the model files, the hooks); pool threads run tract's kernels alone.

use crate::models::threads::{use_threads, WEB_POOL};
use std::sync::atomic::Ordering;
use wasm_bindgen::prelude::*;

/// Starts a pool of `n` threads (once per worker; 1 starts none and runs on the calling
/// worker); resolves when they run. Generate only after that.
#[wasm_bindgen(js_name = initThreads)]
pub fn init_threads(n: usize) -> Result<js_sys::Promise, JsValue> {
    if n == 0 {
        return Err(JsValue::from_str("initThreads: at least 1 thread"));
    }
    if WEB_POOL.compare_exchange(0, n, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return Err(JsValue::from_str("initThreads: the pool is started once per worker"));
    }
    use_threads(n).map_err(|e| JsValue::from_str(&e.to_string()))?;
    if n == 1 {
        return Ok(js_sys::Promise::resolve(&JsValue::UNDEFINED));
    }
    Ok(wasm_bindgen_rayon::init_thread_pool(n))
}

/// How many threads the networks run on (1 until [`init_threads`] started more).
#[wasm_bindgen]
pub fn threads() -> usize {
    crate::models::threads::current()
}
