//! sd.wasm's own tract ops (kernels in crates/sd-kernels), swapped in for tract's after
//! optimization ([`substitute`]): the optimized graph keeps its shape, only the op of a node
//! changes, so everything else tract decided (order, memory) stays as it was.

pub mod attention;
pub mod cast;
pub mod pack;
pub mod winograd;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::tract_linalg::mmm::{EagerPackedInput, MatMatMul, MmmDispatch, Query};
use tract_onnx::tract_core::tract_linalg::pack::PackedFormat;
use tract_onnx::tract_core::tract_linalg::WeightType;

/// What [`substitute`] did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Substituted {
    pub casts: usize,
    pub attention: usize,
    pub packs: usize,
    pub winograd: usize,
    /// fp16 tables whose Gather now picks rows before the widening ([`cast::gather_first`]).
    pub gathers: usize,
}

/// The ops swapped in by default. A set is a comma-separated list of `cast` (the fp16 weight
/// cast; a Gather of an fp16 table picks its rows before the cast), `pack` (the cast fused into
/// the weight packing where one follows; implies `cast`), `attention`, `winograd` (3×3
/// convolutions); or `all`, or `tract` (none). `pack` is off by default: it measured no faster
/// than `cast` in wasm (docs/performance.md).
pub const DEFAULT: &str = "cast,attention,winograd";

/// The set [`DEFAULT`] names, or the one the environment variable `SD_WASM_OPS` names, to
/// compare.
fn chosen() -> String {
    let choice = std::env::var("SD_WASM_OPS").ok().filter(|c| !c.is_empty() && c != "default");
    choice.unwrap_or_else(|| DEFAULT.to_string())
}

fn has(set: &str, name: &str) -> bool {
    set.split(',').any(|s| s.trim() == name || s.trim() == "all")
}

/// Before tract's codegen: replaces the ops ours take over as a whole (its convolutions, which
/// codegen would lower to im2col and GEMM).
pub fn substitute_decluttered(model: &mut TypedModel) -> TractResult<Substituted> {
    substitute_decluttered_with(model, &chosen())
}

/// [`substitute_decluttered`] with an explicit set.
pub fn substitute_decluttered_with(model: &mut TypedModel, set: &str) -> TractResult<Substituted> {
    let mut done = Substituted::default();
    if has(set, "cast") || has(set, "pack") {
        done.gathers = patch_each(model, cast::gather_first)?;
    }
    if has(set, "winograd") {
        done.winograd = patch_each(model, winograd::replace)?;
    }
    Ok(done)
}

/// After tract's codegen: replaces tract ops with ours where ours apply.
pub fn substitute(model: &mut TypedModel) -> TractResult<Substituted> {
    // Keeps our GEMM tiles (sd_kernels::mmm) linked in: tract's dispatch finds them by registry.
    sd_kernels::mmm::register();
    substitute_with(model, &chosen())
}

/// [`substitute`] with an explicit set.
pub fn substitute_with(model: &mut TypedModel, set: &str) -> TractResult<Substituted> {
    let mut done = Substituted::default();
    let has = |name: &str| has(set, name);
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
        done.packs = patch_each(model, pack::replace)?;
    }
    Ok(done)
}

/// Runs `replace` (a patching replacement) on every node of the model as it stands, and
/// returns how many it replaced. Patches append nodes and leave what they replace (and the
/// nodes only that used: fused or bypassed casts) without successors: compacted away after.
pub(crate) fn patch_each(model: &mut TypedModel, replace: fn(&mut TypedModel, usize) -> TractResult<bool>) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        if replace(model, id)? {
            replaced += 1;
        }
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// fp16 values as their bits, what sd_kernels' widening reads.
pub fn f16_bits(values: &[f16]) -> &[u16] {
    // SAFETY: f16 is a transparent u16.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u16, values.len()) }
}

/// A packed buffer's bytes as floats: tract-linalg aligns f32 packings to at least 4 bytes.
pub fn blob_f32(blob: &mut Blob) -> &mut [f32] {
    let bytes = blob.as_bytes_mut();
    // SAFETY: aligned as said, and read as whole floats (the length rounds down).
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut f32, bytes.len() / 4) }
}

/// A packed buffer of `format` for a k × mn operand, like its `new_packed_buffer` but not
/// cleared first: the Winograd op's buffers are large (36 planes of a block's U, tens of MB)
/// and each is written whole by its packer, so clearing them was a full extra pass through
/// memory per evaluation.
///
/// # Safety
/// Every float of the buffer must be written before it is read (the packers in sd_kernels
/// document that they write their panels whole, padding included).
pub unsafe fn packed_buffer_for_overwrite(format: &PackedFormat, k: usize, mn: usize) -> TractResult<EagerPackedInput> {
    use tract_onnx::tract_core::tract_linalg::mmm::PackedExoticFact;
    ensure!(format.dt == f32::datum_type());
    // SAFETY: an uninitialized blob, as tract's own buffers start; see the function's contract.
    let packed = unsafe { Blob::new_for_size_and_align(4 * format.len(k, mn), format.alignment_bytes) };
    Ok(EagerPackedInput {
        fact: PackedExoticFact { format: Box::new(format.clone()), mn: mn.to_dim(), k },
        packed: Arc::new(packed),
        panel_bytes: format.single_panel_len(k) * 4,
        mn,
    })
}

/// tract-linalg's f32 GEMM kernel for an m×k by k×n product (the one its dispatch picks, our
/// tiles included), its packing index, and that packing's A and B formats.
pub fn f32_kernel(m: usize, k: usize, n: usize) -> TractResult<(Box<dyn MatMatMul>, usize, PackedFormat, PackedFormat)> {
    let query = Query {
        weight: WeightType::Plain(DatumType::F32),
        activation: DatumType::F32,
        accumulators: tvec!(DatumType::F32),
        store: None,
        allow_extractor: false,
        m: Some(m),
        k: Some(k),
        n: Some(n),
    };
    let (mmm, packing, _) = MmmDispatch::native().pick(&query).context("no f32 matmul kernel")?;
    let (a, b) = &mmm.packings()[packing];
    let a = a.downcast_ref::<PackedFormat>().context("kernel's A is not a plain packing")?.clone();
    let b = b.downcast_ref::<PackedFormat>().context("kernel's B is not a plain packing")?.clone();
    Ok((mmm, packing, a, b))
}
