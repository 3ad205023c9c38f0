//! sd.wasm's own tract ops (kernels in crates/sd-kernels), swapped in for tract's after
//! optimization ([`substitute`]): the optimized graph keeps its shape, only the op of a node
//! changes, so everything else tract decided (order, memory) stays as it was.

pub mod attention;
pub mod cast;
pub mod pack;

use tract_onnx::prelude::*;

/// What [`substitute`] did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Substituted {
    pub casts: usize,
    pub attention: usize,
    pub packs: usize,
}

/// The ops swapped in by default. A set is a comma-separated list of `cast` (the fp16 weight
/// cast), `pack` (the cast fused into the weight packing where one follows; implies `cast`),
/// `attention`; or `all`, or `tract` (none). `pack` is off by default: it measured no faster
/// than `cast` in wasm (docs/performance.md).
pub const DEFAULT: &str = "cast,attention";

/// Replaces tract ops with ours where ours apply: the set [`DEFAULT`] names, or the one the
/// environment variable `SD_WASM_OPS` names, to compare.
pub fn substitute(model: &mut TypedModel) -> TractResult<Substituted> {
    // Keeps our GEMM tiles (sd_kernels::mmm) linked in: tract's dispatch finds them by registry.
    sd_kernels::mmm::register();
    let choice = std::env::var("SD_WASM_OPS").ok().filter(|c| !c.is_empty() && c != "default");
    substitute_with(model, choice.as_deref().unwrap_or(DEFAULT))
}

/// [`substitute`] with an explicit set.
pub fn substitute_with(model: &mut TypedModel, set: &str) -> TractResult<Substituted> {
    let mut done = Substituted::default();
    let has = |name: &str| set.split(',').any(|s| s.trim() == name || s.trim() == "all");
    let (casts, packs, attention) = (has("cast") || has("pack"), has("pack"), has("attention"));
    for id in 0..model.nodes().len() {
        if casts && cast::replace(model, id)? {
            done.casts += 1;
        }
        if attention && attention::replace(model, id)? {
            done.attention += 1;
        }
    }
    if packs {
        // Patches append nodes; the fused casts are left without successors.
        for id in 0..model.nodes().len() {
            if pack::replace(model, id)? {
                done.packs += 1;
            }
        }
        if done.packs > 0 {
            model.compact()?;
        }
    }
    Ok(done)
}
