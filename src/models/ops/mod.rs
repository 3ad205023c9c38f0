//! sd.wasm's own tract ops (kernels in crates/sd-kernels), swapped in for tract's after
//! optimization ([`substitute`]): the optimized graph keeps its shape, only the op of a node
//! changes, so everything else tract decided (order, memory) stays as it was.

pub mod attention;
pub mod cast;

use tract_onnx::prelude::*;

/// What [`substitute`] did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Substituted {
    pub casts: usize,
    pub attention: usize,
}

/// The ops swapped in by default: `cast` (the fp16 weight cast), `all` (cast and attention),
/// `attention`, or `tract` (none).
pub const DEFAULT: &str = "cast";

/// Replaces tract ops with ours where ours apply: the set [`DEFAULT`] names, or the one the
/// environment variable `SD_WASM_OPS` names (`tract`, `cast`, `attention`, `all`), to compare.
pub fn substitute(model: &mut TypedModel) -> TractResult<Substituted> {
    let choice = std::env::var("SD_WASM_OPS").ok().filter(|c| ["tract", "cast", "attention", "all"].contains(&c.as_str()));
    substitute_with(model, choice.as_deref().unwrap_or(DEFAULT))
}

/// [`substitute`] with an explicit set.
pub fn substitute_with(model: &mut TypedModel, set: &str) -> TractResult<Substituted> {
    let mut done = Substituted::default();
    let (casts, attention) = match set {
        "cast" => (true, false),
        "attention" => (false, true),
        "all" => (true, true),
        _ => (false, false),
    };
    for id in 0..model.nodes().len() {
        if casts && cast::replace(model, id)? {
            done.casts += 1;
        }
        if attention && attention::replace(model, id)? {
            done.attention += 1;
        }
    }
    Ok(done)
}
