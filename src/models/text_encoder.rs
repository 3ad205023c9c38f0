//! CLIP text encoder: token ids → per-token hidden states: `last_hidden_state`, or for
//! Automatic1111's "Clip skip" N > 1 the output `clip_skip_N` (the final layer norm of the
//! N-th hidden state from the end), which scripts/convert.py exports beside it.

use super::lora::Merge;
use super::{run_f32, OnnxGraph, Plan};
use crate::error::{Result, SdError};
use crate::model_dir::{ModelFiles, TEXT_ENCODER};
use tract_onnx::prelude::*;

pub struct TextEncoder {
    plan: Plan,
    ids_type: DatumType,
    seq_len: usize,
    /// Index of an `attention_mask` input, if the export has one (fed all ones, which is
    /// what diffusers does by passing no mask).
    mask_input: Option<usize>,
    ids_input: usize,
}

impl TextEncoder {
    /// The optimized network.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// `seq_len` is the tokenizer's padded length (77 for CLIP); `clip_skip` 1 is the last
    /// layer; `loras`: the LoRAs merged into its weights ([`super::lora::plan`]).
    pub fn load(files: &dyn ModelFiles, seq_len: usize, clip_skip: usize, loras: &Merge) -> Result<Self> {
        let mut graph = OnnxGraph::load_merged(files, TEXT_ENCODER, |_, _| super::memory::TEXT_ENCODER_WORKING, loras)?;
        let ids = graph.input(super::check::TEXT_ENCODER_INPUTS[0])?;
        let ids_type = match ids.datum_type {
            Some(DatumType::I32) => DatumType::I32,
            Some(DatumType::I64) | None => DatumType::I64,
            Some(other) => {
                return Err(SdError::model(format!("{}: input_ids has type {other:?}; expected int32 or int64", graph.path)))
            }
        };
        if let Some(Some(fixed)) = ids.shape.as_ref().and_then(|s| s.get(1).copied()) {
            if fixed != seq_len {
                return Err(SdError::model(format!(
                    "{}: input_ids has fixed length {fixed} but the tokenizer pads to {seq_len}",
                    graph.path
                )));
            }
        }
        graph.pin_input(ids.index, ids_type, &[1, seq_len])?;
        let mask_input = graph.inputs()?.iter().find(|i| i.name == "attention_mask").map(|i| i.index);
        if let Some(ix) = mask_input {
            graph.pin_input(ix, ids_type, &[1, seq_len])?;
        }
        if graph.inputs()?.len() > 1 + mask_input.is_some() as usize {
            return Err(SdError::model(format!(
                "{}: unexpected inputs {:?}; a text encoder takes input_ids (and optionally attention_mask)",
                graph.path,
                graph.inputs()?.iter().map(|i| i.name.clone()).collect::<Vec<_>>()
            )));
        }
        if clip_skip > 1 {
            keep_clip_skip_output(&mut graph, clip_skip)?;
        } else {
            graph.keep_output("last_hidden_state")?;
        }
        Ok(TextEncoder { plan: graph.into_plan()?, ids_type, seq_len, mask_input, ids_input: ids.index })
    }

    /// Returns hidden states of shape [1, seq_len, hidden].
    pub fn encode(&self, ids: &[i64]) -> Result<ndarray::ArrayD<f32>> {
        if ids.len() != self.seq_len {
            return Err(SdError::runtime(format!("text encoder: {} ids, expected {}", ids.len(), self.seq_len)));
        }
        let as_tensor = |values: Vec<i64>| -> Result<Tensor> {
            let t = ndarray::Array2::from_shape_vec((1, self.seq_len), values)
                .map_err(|e| SdError::runtime(e.to_string()))?;
            Tensor::from(t)
                .cast_to_dt(self.ids_type)
                .map(|t| t.into_owned())
                .map_err(|e| SdError::runtime(format!("{e:?}")))
        };
        let mut inputs: Vec<(usize, Tensor)> = vec![(self.ids_input, as_tensor(ids.to_vec())?)];
        if let Some(ix) = self.mask_input {
            inputs.push((ix, as_tensor(vec![1; self.seq_len])?));
        }
        inputs.sort_by_key(|(ix, _)| *ix);
        run_f32(&self.plan, inputs.into_iter().map(|(_, t)| t.into()).collect(), "text encoder")
    }
}

/// Selects `clip_skip_N`; a text encoder exported without it (older model dirs, other
/// exporters) or with fewer layers is refused with what to do.
fn keep_clip_skip_output(graph: &mut OnnxGraph, clip_skip: usize) -> Result<()> {
    let name = format!("clip_skip_{clip_skip}");
    let outputs = graph.output_names()?;
    let available = outputs.iter().filter(|n| n.starts_with("clip_skip_")).count();
    if available == 0 {
        return Err(SdError::model(format!(
            "{}: this text encoder has no hidden-state outputs, so «clip_skip» {clip_skip} cannot be used; \
             export the model dir again with scripts/convert.py (it adds them), or use «clip_skip» 1",
            graph.path
        )));
    }
    if !outputs.contains(&name) {
        return Err(SdError::usage(format!(
            "«clip_skip» {clip_skip} is more than this text encoder's layers allow (at most {})",
            available + 1
        )));
    }
    graph.keep_output(&name)
}
