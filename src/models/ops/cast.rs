//! fp16 → f32 Cast of the weights (fed as fp16 inputs, see `OnnxGraph`): tract's Cast
//! converts element by element through `half`'s scalar software conversion on wasm32
//! (~860M elements per SD 1.5 UNet evaluation); ours is sd_kernels::cast (SIMD128, bit-exact
//! with half for every input).

use crate::models::threads;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::Gather;
use tract_onnx::tract_core::ops::cast::Cast;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct F16ToF32;

impl Op for F16ToF32 {
    fn name(&self) -> StaticName {
        "F16ToF32".into()
    }
    op_as_typed_op!();
}

impl EvalOp for F16ToF32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        Ok(tvec!(widen(&input)?.into_tvalue()))
    }
}

impl TypedOp for F16ToF32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == DatumType::F16);
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// An f16 tensor widened to f32.
pub fn widen(input: &Tensor) -> TractResult<Tensor> {
    ensure!(input.datum_type() == DatumType::F16, "F16ToF32 on {:?}", input.datum_type());
    let plain = input.try_as_plain_ram()?;
    let src = super::f16_bits(plain.as_slice::<f16>()?);
    // SAFETY: every element of `out` is written below.
    let mut out = unsafe { Tensor::uninitialized::<f32>(input.shape())? };
    // Split over the pool (natively, and in the threaded browser build): a widening is
    // memory-bound and ran on one thread while the products around it used every core.
    let chunk = src.len().div_ceil(threads::parts_for(src.len())).next_multiple_of(8); // whole SIMD lanes per chunk
    threads::for_each_chunk_mut(out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?, chunk, |i, dst| {
        sd_kernels::cast::f16_to_f32(&src[i * chunk..][..dst.len()], dst)
    });
    Ok(out)
}

/// Swaps node `id`'s op for ours when it is a Cast from f16 to f32.
pub fn replace(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(cast) = node.op_as::<Cast>() else { return Ok(false) };
    if cast.to != DatumType::F32 || node.inputs.len() != 1 || model.outlet_fact(node.inputs[0])?.datum_type != DatumType::F16 {
        return Ok(false);
    }
    model.node_mut(id).op = Box::new(F16ToF32);
    Ok(true)
}

/// Moves a weight's fp16 → f32 Cast after the Gather that is its only consumer (node `id`, a
/// Gather of a Cast): the text encoder's token embedding (49,408 × 1,024 in SD 2.x) was
/// widened whole on every run to pick 77 rows of it (200 MB and ~0.4 s in wasm). Widening
/// commutes with picking rows, so the bits are the same.
pub fn gather_first(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(gather) = node.op_as::<Gather>() else { return Ok(false) };
    let cast_node = model.node(node.inputs[0].node);
    let Some(cast) = cast_node.op_as::<Cast>() else { return Ok(false) };
    let only_consumer = model.outlet_successors(node.inputs[0]).len() == 1;
    if cast.to != DatumType::F32 || gather.output_type.is_some() || !only_consumer || model.outlet_fact(cast_node.inputs[0])?.datum_type != DatumType::F16 {
        return Ok(false);
    }
    let mut patch = TypedModelPatch::default();
    let table = patch.tap_model(model, cast_node.inputs[0])?;
    let indices = patch.tap_model(model, node.inputs[1])?;
    let picked = patch.wire_node(format!("{}.f16", node.name), gather.clone(), &[table, indices])?;
    let widened = patch.wire_node(format!("{}.to_f32", node.name), Cast { to: DatumType::F32 }, &picked)?;
    patch.shunt_outside(model, id.into(), widened[0])?;
    patch.apply(model)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same bits as tract's own Cast for every fp16 input.
    #[test]
    fn matches_tract_cast_for_every_input() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let input = Tensor::from_shape(&[all.len()], &all).unwrap();
        let ours = widen(&input).unwrap();
        let tract = Cast { to: DatumType::F32 }.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue())).unwrap().remove(0);
        let (a, b) = (ours.try_as_plain_ram().unwrap(), tract.try_as_plain_ram().unwrap());
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "input {i:#06x}");
        }
    }

    /// A Gather of a widened fp16 table picks its rows first, then widens them: same values,
    /// and the Gather now reads the fp16 table (the whole table is never widened).
    #[test]
    fn gather_picks_rows_before_the_widening() {
        let table: Vec<f16> = (0..40).map(|i| f16::from_f32(i as f32 * 0.37 - 5.0)).collect();
        let mut model = TypedModel::default();
        let w = model.add_source("table", f16::fact([10, 4])).unwrap();
        let ids = model.add_source("ids", i64::fact([3])).unwrap();
        let wide = model.wire_node("table_to_f32", Cast { to: DatumType::F32 }, &[w]).unwrap();
        let rows = model.wire_node("gather", Gather::new(0), &[wide[0], ids]).unwrap();
        model.select_output_outlets(&rows).unwrap();
        let run = |model: &TypedModel| {
            let inputs = tvec!(Tensor::from_shape(&[10, 4], &table).unwrap().into_tvalue(), tensor1(&[7i64, 0, 7]).into_tvalue());
            model.clone().into_runnable().unwrap().run(inputs).unwrap().remove(0)
        };
        let before = run(&model);
        assert!(super::super::patch_each(&mut model, gather_first).unwrap() == 1);
        let gather = model.nodes().iter().find(|n| n.op_is::<Gather>()).unwrap();
        assert_eq!(model.outlet_fact(gather.inputs[0]).unwrap().datum_type, DatumType::F16);
        let after = run(&model);
        assert_eq!(after.datum_type(), DatumType::F32);
        assert!(before == after, "{before:?} != {after:?}");
        let expected: Vec<f32> = [7usize, 0, 7].iter().flat_map(|&r| table[r * 4..][..4].iter().map(|v| v.to_f32())).collect();
        assert_eq!(after.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(), &expected[..]);
    }

    /// Split over 2 and 3 threads (3 cuts unevenly, past the gate): the same bits as on one.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn the_same_bits_on_any_number_of_threads() {
        use crate::models::threads::pool;
        use tract_onnx::tract_core::tract_linalg::multithread::multithread_tract_scope;
        let all: Vec<f16> = (0..=u16::MAX).chain(0..1001).map(f16::from_bits).collect();
        let input = Tensor::from_shape(&[all.len()], &all).unwrap();
        let one = widen(&input).unwrap();
        for n in [2, 3] {
            let many = multithread_tract_scope(pool(n).unwrap(), || widen(&input)).unwrap();
            assert!(one == many, "{n} threads: different bits than 1");
        }
    }
}
