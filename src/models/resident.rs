//! Where the address space allows it, the weights' per-run handling done once at load.
//!
//! In wasm32 the fp16 weights stay graph inputs and are widened (and packed for the GEMM) on
//! every evaluation: their f32 panels would not fit beside them in 4 GiB (see [`super::OnnxGraph`]).
//! A native process has no such limit, and there that per-run handling is a large share of an
//! evaluation (docs/performance.md, "Native profile"). [`fold_weights`] runs, once, every node
//! of the optimized graph that reads only weights (and constants): the casts, the packings,
//! the reshapes between them; then it puts what the rest of the graph reads from them in as
//! constants. Each value is computed by the same op on the same input as it would be per run,
//! so the outputs are the same bits.

use crate::error::{chain, Result, SdError};
use std::collections::{HashMap, HashSet};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;

/// Whether this process folds its networks' weights at load: with a 64-bit address space and
/// the memory for the packed f32 panels (about twice the fp16 weights' bytes, `fp16_bytes`,
/// beside `needed` for the run itself). `SD_WASM_WEIGHTS=at-rest` keeps them per run, to
/// compare (and `packed` asks for folding even where memory looks short).
pub fn fold_at_load(fp16_bytes: u64, needed: u64) -> bool {
    if usize::BITS < 64 {
        return false;
    }
    match std::env::var("SD_WASM_WEIGHTS").as_deref() {
        Ok("at-rest") => false,
        Ok("packed") => true,
        _ => super::memory::free_system_memory().is_none_or(|free| needed + 2 * fp16_bytes <= free),
    }
}

/// Folds the weight-only part of `model`, whose last `weights.len()` inputs are fed `weights`
/// on every run, into constants; afterwards the model has no weight inputs. Returns the weights
/// still to be fed per run: none, unless an op could not be evaluated out of a plan, which
/// leaves the model as it was and returns all of them.
pub fn fold_weights(model: &mut TypedModel, weights: Vec<TValue>, path: &str) -> Result<Vec<TValue>> {
    let fail = |e: TractError| SdError::runtime(format!("{path}: folding the weights at load failed: {}", chain(&e)));
    let own = model.inputs.len() - weights.len();
    let weight_inputs: Vec<OutletId> = model.inputs[own..].to_vec();
    let order = model.eval_order().map_err(fail)?;

    // Which nodes read only weights and constants (and at least one weight).
    let mut folded: HashSet<usize> = weight_inputs.iter().map(|o| o.node).collect();
    let is_const = |id: usize| model.node(id).op_is::<Const>();
    for &id in &order {
        let node = model.node(id);
        if folded.contains(&id) || node.inputs.is_empty() {
            continue;
        }
        let weight_only = node.inputs.iter().all(|i| folded.contains(&i.node) || is_const(i.node));
        if weight_only && node.inputs.iter().any(|i| folded.contains(&i.node)) {
            folded.insert(id);
        }
    }
    // The values the rest of the graph (or its outputs) reads: each becomes a constant.
    let outputs: HashSet<OutletId> = model.outputs.iter().copied().collect();
    let mut frontier: Vec<OutletId> = folded
        .iter()
        .flat_map(|&id| (0..model.node(id).outputs.len()).map(move |slot| OutletId::new(id, slot)))
        .filter(|o| {
            outputs.contains(o) || model.outlet_successors(*o).iter().any(|inlet| !folded.contains(&inlet.node))
        })
        .collect();
    frontier.sort_by_key(|o| (o.node, o.slot));
    let frontier_set: HashSet<OutletId> = frontier.iter().copied().collect();

    // Evaluate in order, each intermediate dropped once its last folded reader has run, so at
    // most one weight's f32 copy is alive beside the folded results.
    let mut readers: HashMap<OutletId, usize> = HashMap::new();
    for &id in order.iter().filter(|id| folded.contains(id)) {
        for input in &model.node(id).inputs {
            *readers.entry(*input).or_default() += 1;
        }
    }
    let mut values: HashMap<OutletId, TValue> = weight_inputs.iter().copied().zip(weights.iter().cloned()).collect();
    // The folded nodes other than the weight inputs themselves (sources: no inputs).
    for &id in order.iter().filter(|id| folded.contains(id) && !model.node(**id).inputs.is_empty()) {
        let node = model.node(id);
        let mut inputs = TVec::new();
        for input in &node.inputs {
            let value = match values.get(input) {
                Some(v) => v.clone(),
                None => model.node(input.node).op_as::<Const>().expect("a folded node reads weights or constants").val().clone().into_tvalue(),
            };
            inputs.push(value);
            let left = readers.get_mut(input).expect("counted above");
            *left -= 1;
            if *left == 0 && !frontier_set.contains(input) {
                values.remove(input);
            }
        }
        let Some(outputs) = node.op.eval_out_of_plan(inputs).map_err(fail)? else {
            // Not expected of a cast or a packing: keep every weight per run.
            return Ok(weights);
        };
        for (slot, value) in outputs.into_iter().enumerate() {
            values.insert(OutletId::new(id, slot), value);
        }
    }

    let mut patch = TypedModelPatch::default();
    for outlet in &frontier {
        let value = values.remove(outlet).expect("every frontier value was computed");
        let fact = model.outlet_fact(*outlet).map_err(fail)?;
        let konst = Const::new_with_opt_exotic_fact(value.into_arc_tensor(), fact.exotic_fact.clone()).map_err(fail)?;
        let name = format!("{}.{}.at_load", model.node(outlet.node).name, outlet.slot);
        let wire = patch.wire_node(name, konst, &[]).map_err(fail)?[0];
        patch.shunt_outside(model, *outlet, wire).map_err(fail)?;
    }
    patch.apply(model).map_err(fail)?;
    model.inputs.retain(|o| !weight_inputs.contains(o));
    model.compact().map_err(fail)?;
    Ok(Vec::new())
}
