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
/// worker); resolves when they run. Generate only after that. A panic on a pool thread is
/// told to the page over the BroadcastChannel named `failures` (see [`report_pool_panics`]).
#[wasm_bindgen(js_name = initThreads)]
pub fn init_threads(n: usize, failures: String) -> Result<js_sys::Promise, JsValue> {
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
    report_pool_panics(failures);
    Ok(wasm_bindgen_rayon::init_thread_pool(n))
}

#[wasm_bindgen(inline_js = "export function post_to_channel(name, message) { new BroadcastChannel(name).postMessage(message); }")]
extern "C" {
    fn post_to_channel(name: &str, message: &str);
}

/// A panic on a pool thread traps that Web Worker (panic = "abort"), and the worker that
/// called `generate` would wait for its share of the work forever: only the page can end that
/// run (web/app.js terminates the worker and starts a fresh one). So the panic hook (the one
/// src/web.rs installs, kept) also posts the panic's message on the page's channel when it
/// runs on a pool thread. A panic on the calling worker traps `generate` itself and reaches
/// web/worker.js as an error, as in the single-threaded build.
fn report_pool_panics(channel: String) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if rayon::current_thread_index().is_some() {
            post_to_channel(&channel, &crate::error::panic_message(info));
        }
        previous(info);
    }));
}

/// For the tests (`?poolPanicAtStep=N` on the page): a panic on a pool thread.
#[wasm_bindgen(js_name = testPanicOnPool)]
pub fn test_panic_on_pool() {
    rayon::spawn(|| panic!("a test panic on a pool thread"));
}

/// How many threads the networks run on (1 until [`init_threads`] started more).
#[wasm_bindgen]
pub fn threads() -> usize {
    crate::models::threads::current()
}
