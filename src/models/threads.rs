//! How many threads the networks run on: a process setting (`--threads`), not a request field.
//! The one place the builds differ here. Natively tract-linalg's `multithread-mm` feature is
//! on (Cargo.toml, native targets only) and [`use_threads`] installs a rayon pool as tract's
//! default executor: its matrix products split their *output tiles* over the pool (every tile
//! still runs its whole reduction on one thread, in the same order), and its row-wise ops
//! (element-wise, reductions, softmax, norms, pooling) split on row boundaries, so the bytes
//! do not depend on the thread count. The wasm modules are single-threaded: wasmtime 47+
//! removed wasi-threads and Bacalhau's wazero has no threads, so only 1 is accepted there.
//! The one exception is the threaded browser build (web/pkg-threads/: wasm32-unknown-unknown
//! with `+atomics`, scripts/build-web-threads.sh): `multithread-mm` is on there too, and the
//! pool is rayon's *global* pool, whose threads are the Web Workers that wasm-bindgen-rayon
//! starts (`initThreads`, src/web_threads.rs, once per page worker). tract runs on it as
//! `Executor::RayonGlobal`: a private rayon pool cannot spawn threads in a browser.

use crate::error::{Result, SdError};

/// What to say when a build cannot run more than one thread.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
const SINGLE: &str = "this build is single-threaded: WebAssembly threads need wasi-threads, which \
     wasmtime removed in version 47, and Bacalhau's wazero has no threads at all; use the native \
     build (`sd`) for more";

/// The threaded browser build's pool size: 0 until `initThreads` has started it.
#[cfg(all(target_arch = "wasm32", target_os = "unknown", target_feature = "atomics"))]
pub(crate) static WEB_POOL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The default: every core the OS gives the process natively, 1 in the wasm modules, the
/// pool's size in the threaded browser build.
pub fn default_threads() -> usize {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown", target_feature = "atomics"))]
    return WEB_POOL.load(std::sync::atomic::Ordering::Relaxed).max(1);
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    return 1;
    #[cfg(not(target_family = "wasm"))]
    return std::thread::available_parallelism().map_or(1, |n| n.get());
}

/// Checks a thread count before any work: at least 1, and 1 in a wasm module (usage errors).
/// The threaded browser build takes 1 or its pool's size (rayon's global pool is started once).
pub fn check_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(SdError::usage("--threads must be at least 1"));
    }
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    if n > 1 {
        return Err(SdError::usage(format!("--threads {n}: {SINGLE}")));
    }
    #[cfg(all(target_arch = "wasm32", target_os = "unknown", target_feature = "atomics"))]
    {
        let pool = WEB_POOL.load(std::sync::atomic::Ordering::Relaxed);
        if n > 1 && n != pool {
            return Err(SdError::usage(format!(
                "threads {n}: this page's pool has {pool} threads (started once per worker); use 1 or {pool}"
            )));
        }
    }
    Ok(())
}

/// Makes every network run from now on use `n` threads (process-wide: tract's default executor).
pub fn use_threads(n: usize) -> Result<()> {
    check_threads(n)?;
    #[cfg(not(target_family = "wasm"))]
    {
        use tract_linalg::multithread::{set_default_executor, Executor};
        let executor = if n == 1 { Executor::SingleThread } else { pool(n)? };
        set_default_executor(executor);
    }
    #[cfg(all(target_arch = "wasm32", target_os = "unknown", target_feature = "atomics"))]
    {
        use tract_linalg::multithread::{set_default_executor, Executor};
        set_default_executor(if n == 1 { Executor::SingleThread } else { Executor::RayonGlobal });
    }
    Ok(())
}

/// A rayon pool of `n` threads as a tract executor (its threads are named `sd-0`, `sd-1`, …).
#[cfg(not(target_family = "wasm"))]
pub fn pool(n: usize) -> Result<tract_linalg::multithread::Executor> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("sd-{i}"))
        .build()
        .map_err(|e| SdError::runtime(format!("cannot start {n} threads: {e}")))?;
    Ok(tract_linalg::multithread::Executor::MultiThread(std::sync::Arc::new(pool)))
}

/// How many threads tract's executor runs on now (1 in the wasm modules).
pub fn current() -> usize {
    #[cfg(not(target_family = "wasm"))]
    if let tract_linalg::multithread::Executor::MultiThread(pool) = tract_linalg::multithread::current_tract_executor() {
        return pool.current_num_threads();
    }
    #[cfg(all(target_arch = "wasm32", target_os = "unknown", target_feature = "atomics"))]
    if let tract_linalg::multithread::Executor::RayonGlobal = tract_linalg::multithread::current_tract_executor() {
        return rayon::current_num_threads();
    }
    1
}

/// Runs `task(part)` for every part in `0..parts` on tract's executor: natively spread over the
/// `--threads` pool, in the threaded browser build over rayon's global pool, in the other wasm
/// modules one after the other. The first error wins. Our own ops split their work this way,
/// into parts whose results do not depend on which thread runs them.
pub fn try_for_each_part<E: Send>(parts: usize, task: impl Fn(usize) -> std::result::Result<(), E> + Sync) -> std::result::Result<(), E> {
    #[cfg(not(target_family = "wasm"))]
    if let tract_linalg::multithread::Executor::MultiThread(pool) = tract_linalg::multithread::current_tract_executor() {
        use rayon::prelude::*;
        return pool.install(|| (0..parts).into_par_iter().try_for_each(&task));
    }
    #[cfg(all(target_arch = "wasm32", target_os = "unknown", target_feature = "atomics"))]
    if let tract_linalg::multithread::Executor::RayonGlobal = tract_linalg::multithread::current_tract_executor() {
        use rayon::prelude::*;
        return (0..parts).into_par_iter().try_for_each(&task);
    }
    (0..parts).try_for_each(task)
}

/// Below this many elements element-wise work stays on the calling thread: tract's own gate
/// for its row-wise ops (a dispatch to the pool costs more than it saves).
pub const SPLIT_GATE: usize = 1 << 15;

/// How many parts to cut element-wise work over `elements` into: every thread past the gate.
pub fn parts_for(elements: usize) -> usize {
    if elements >= SPLIT_GATE { current() } else { 1 }
}

/// Runs `task(index, chunk)` for each `chunk_len`-long piece of `dst` (the last may be
/// shorter), spread as [`try_for_each_part`] spreads parts. For work whose result does not
/// depend on where `dst` is cut (conversions, packing whole panels).
pub fn for_each_chunk_mut<T: Send>(dst: &mut [T], chunk_len: usize, task: impl Fn(usize, &mut [T]) + Sync) {
    let chunks: Vec<std::sync::Mutex<&mut [T]>> = dst.chunks_mut(chunk_len.max(1)).map(std::sync::Mutex::new).collect();
    let done = try_for_each_part(chunks.len(), |i| -> std::result::Result<(), std::convert::Infallible> {
        task(i, &mut chunks[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        Ok(())
    });
    let Ok(()) = done;
}
