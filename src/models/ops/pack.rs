//! An fp16 weight's Cast to f32 and its packing for the GEMM kernel (tract's OptMatMulPack,
//! run on every evaluation since the weights are inputs) fused into one op: the fp16 weight
//! is widened straight into the packed panels (sd_kernels::pack), without the f32 copy in
//! between (860M elements written and read again per SD 1.5 UNet evaluation).

use super::cast::F16ToF32;
use crate::models::threads;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};
use tract_onnx::tract_core::tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_onnx::tract_core::tract_linalg::pack::PackedFormat;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct F16Pack {
    pub format: PackedFormat,
    pub k_axis: usize,
    pub mn_axis: usize,
    /// The shape the original pack saw (the fp16 input may have another one, when shape-only
    /// ops stood between the cast and the pack: the data is the same, contiguous).
    pub shape: TVec<usize>,
    /// The original pack's output fact (shape and exotic fact), kept as it was.
    pub fact: TypedFact,
}

impl Op for F16Pack {
    fn name(&self) -> StaticName {
        "F16Pack".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} k axis {} mn axis {}", self.format, self.k_axis, self.mn_axis)])
    }
    op_as_typed_op!();
}

impl EvalOp for F16Pack {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let packed = pack(&self.format, &input, &self.shape, self.k_axis, self.mn_axis)?;
        let shape: TVec<usize> = self.fact.shape.as_concrete().context("symbolic pack shape")?.into();
        let storage = PackedMatrixStorage::new_batched(&shape, tvec![Box::new(packed) as Box<dyn MMMInputValue>]);
        Ok(tvec!(storage.into_tensor(DatumType::F32).into_tvalue()))
    }
}

impl TypedOp for F16Pack {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.fact.clone()))
    }
    as_op!();
}

/// Widens and packs a single fp16 matrix: `input`'s data (contiguous) seen with `shape`,
/// whose axes other than k and mn are all 1.
pub fn pack(format: &PackedFormat, input: &Tensor, shape: &[usize], k_axis: usize, mn_axis: usize) -> TractResult<EagerPackedInput> {
    ensure!(input.datum_type() == DatumType::F16 && format.dt == DatumType::F32);
    ensure!(shape.iter().product::<usize>() == input.len());
    ensure!(shape.iter().enumerate().all(|(ax, d)| ax == k_axis || ax == mn_axis || *d == 1));
    let (k, mn) = (shape[k_axis], shape[mn_axis]);
    let stride = |axis: usize| shape[axis + 1..].iter().product::<usize>();
    let (k_stride, mn_stride) = (stride(k_axis), stride(mn_axis));
    let panel_len = format.single_panel_len(k);
    let len = format.len(k, mn);
    let plain = input.try_as_plain_ram()?;
    let src = super::f16_bits(plain.as_slice::<f16>()?);
    // SAFETY: pack_f16 writes every element of the panels (padding zeroed).
    let mut blob = unsafe { Blob::new_for_size_and_align(4 * len, format.alignment_bytes) };
    {
        let dst = super::blob_f32(&mut blob);
        // Whole panels per thread (natively, and in the threaded browser build): each panel is
        // packed as on one thread, so the bytes do not depend on the split.
        let (r, panels) = (format.r, mn.div_ceil(format.r));
        let parts = threads::parts_for(len).clamp(1, panels.max(1));
        if parts == 1 || panel_len == 0 {
            sd_kernels::pack::pack_f16(src, k, mn, k_stride, mn_stride, r, panel_len, dst);
        } else {
            let per_part = panels.div_ceil(parts);
            threads::for_each_chunk_mut(&mut dst[..panels * panel_len], per_part * panel_len, |i, dst| {
                let first = i * per_part * r;
                let rows = (mn - first).min(per_part * r);
                sd_kernels::pack::pack_f16(&src[first * mn_stride..], k, rows, k_stride, mn_stride, r, panel_len, dst);
            });
        }
    }
    Ok(EagerPackedInput {
        fact: PackedExoticFact { format: Box::new(format.clone()), mn: mn.to_dim(), k },
        packed: Arc::new(blob),
        panel_bytes: panel_len * 4,
        mn,
    })
}

/// Fuses node `id` when it is an OptMatMulPack of a single f32 packing fed by our F16ToF32,
/// directly or through shape-only ops (reshapes, added or removed unit axes), each read by
/// nothing else: the pack then reads the fp16 weight itself.
pub fn replace(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    if !node.op_is::<OptMatMulPack>() || node.inputs.len() != 1 {
        return Ok(false);
    }
    let pack_input = node.inputs[0];
    let mut cursor = pack_input;
    let f16_outlet = loop {
        let n = model.node(cursor.node);
        if n.outputs.len() != 1 || n.outputs[0].successors.len() != 1 || n.inputs.len() != 1 {
            return Ok(false);
        }
        if n.op_is::<F16ToF32>() {
            break n.inputs[0];
        }
        if !["IntoShape", "Reshape", "AddAxis", "RmAxis"].contains(&n.op.name().as_ref()) {
            return Ok(false);
        }
        cursor = n.inputs[0];
    };
    let input_fact = model.outlet_fact(pack_input)?.clone();
    let fact = model.outlet_fact(OutletId::new(id, 0))?.clone();
    let Some(exotic) = fact.exotic_fact.as_ref().and_then(|e| e.downcast_ref::<DynPackedExoticFact>()) else {
        return Ok(false);
    };
    if exotic.packers.len() != 1 {
        return Ok(false);
    }
    let Some(format) = exotic.packers[0].downcast_ref::<PackedFormat>() else { return Ok(false) };
    if format.dt != DatumType::F32 || fact.shape.as_concrete().is_none() || input_fact.shape.as_concrete().is_none() {
        return Ok(false);
    }
    // k and mn axes from the op's own axes mapping ('K' and 'M').
    let mapping = node.op.axes_mapping(&[&input_fact], &[&fact])?;
    let axis_of = |repr: char| mapping.axis(repr).ok().and_then(|a| a.inputs[0].first().copied());
    let (Some(k_axis), Some(mn_axis)) = (axis_of('K'), axis_of('M')) else { return Ok(false) };
    let shape = input_fact.shape.as_concrete().unwrap();
    if !shape.iter().enumerate().all(|(ax, d)| ax == k_axis || ax == mn_axis || *d == 1) {
        return Ok(false);
    }
    // Only where the fused kernel is vectorized (natively, r = 16 k-major panels would go
    // element by element: measured slower than the cast plus tract's pack).
    let stride = |axis: usize| shape[axis + 1..].iter().product::<usize>();
    if !sd_kernels::pack::is_fast(stride(k_axis), stride(mn_axis), format.r) {
        return Ok(false);
    }
    let op = F16Pack { format: format.clone(), k_axis, mn_axis, shape: shape.into(), fact };
    let patch = TypedModelPatch::replace_single_op(model, model.node(id), &[f16_outlet], op)?;
    patch.apply(model)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::tract_linalg::mmm::MMMInputFormat;

    /// Same packed bytes as casting to f32 and packing with tract-linalg, both layouts.
    #[test]
    fn matches_cast_then_tract_pack() {
        for (r, pad, align) in [(8usize, 1usize, 16usize), (16, 1, 64), (4, 0, 16)] {
            let format = PackedFormat { dt: DatumType::F32, r, alignment_bytes: align, end_padding_record: pad };
            for (shape, k_axis, mn_axis) in [(vec![1, 20, 37], 2, 1), (vec![37, 20], 0, 1), (vec![1, 9, 64], 2, 1), (vec![16, 1, 8], 0, 2)] {
                let n: usize = shape.iter().product();
                let data: Vec<f16> = (0..n).map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 77.0 - 6.0)).collect();
                let input = Tensor::from_shape(&shape, &data).unwrap();
                let ours = pack(&format, &input, &shape, k_axis, mn_axis).unwrap();
                let f32_input = input.cast_to::<f32>().unwrap().into_owned();
                let theirs = format.prepare_one(&f32_input, k_axis, mn_axis).unwrap();
                let theirs = theirs.downcast_ref::<EagerPackedInput>().unwrap();
                assert_eq!(ours.panel_bytes, theirs.panel_bytes);
                let (a, b) = (ours.packed.as_bytes(), theirs.packed.as_bytes());
                assert_eq!(a.len(), b.len());
                // tract leaves the end padding uninitialized in release builds: compare the data.
                let k = shape[k_axis];
                let mn = shape[mn_axis];
                for p in 0..mn.div_ceil(r) {
                    for kk in 0..k {
                        for x in 0..r.min(mn - p * r) {
                            let at = (p * ours.panel_bytes / 4 + kk * r + x) * 4;
                            assert_eq!(a[at..at + 4], b[at..at + 4], "shape {shape:?} r {r} panel {p} k {kk} x {x}");
                        }
                    }
                }
            }
        }
    }

    /// Past the gate the panels are split over the pool: at 2 and 3 threads (uneven runs of
    /// panels, a partial last panel) the same packed bytes as on one, both layouts.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn the_same_bytes_on_any_number_of_threads() {
        use crate::models::threads::pool;
        use tract_onnx::tract_core::tract_linalg::multithread::multithread_tract_scope;
        let format = PackedFormat { dt: DatumType::F32, r: 8, alignment_bytes: 16, end_padding_record: 1 };
        for (shape, k_axis, mn_axis) in [(vec![1, 203, 320], 2, 1), (vec![320, 203], 0, 1)] {
            let n: usize = shape.iter().product();
            assert!(n >= threads::SPLIT_GATE);
            let data: Vec<f16> = (0..n).map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 77.0 - 6.0)).collect();
            let input = Tensor::from_shape(&shape, &data).unwrap();
            let one = pack(&format, &input, &shape, k_axis, mn_axis).unwrap();
            let data_bytes = shape[mn_axis].div_ceil(8) * one.panel_bytes;
            for threads in [2, 3] {
                let many = multithread_tract_scope(pool(threads).unwrap(), || pack(&format, &input, &shape, k_axis, mn_axis)).unwrap();
                assert!(one.packed.as_bytes()[..data_bytes] == many.packed.as_bytes()[..data_bytes], "{shape:?} at {threads} threads");
            }
        }
    }
}
