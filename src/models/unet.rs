//! The denoising UNet: (latents, timestep, text embeddings) → noise (or v) prediction.
//! Pinned to batch 1: classifier-free guidance runs it twice, which keeps the peak memory of
//! a full-size UNet inside wasm32's address space.

use super::{float_tensor, float_type, run_f32, OnnxGraph, Plan};
use crate::error::{Result, SdError};
use crate::model_dir::{ModelFiles, UNET};
use tract_onnx::prelude::*;

pub struct Unet {
    plan: Plan,
    order: [usize; 3],
    sample_type: DatumType,
    timestep_type: DatumType,
    timestep_rank: usize,
    hidden_type: DatumType,
}

impl Unet {
    pub fn load(files: &dyn ModelFiles, latent: [usize; 4], text_shape: [usize; 3]) -> Result<Self> {
        let mut graph = OnnxGraph::load(files, UNET, |proto| super::memory::unet_working(proto, &latent))?;
        let sample = graph.input(super::check::UNET_INPUTS[0])?;
        let timestep = graph.input(super::check::UNET_INPUTS[1])?;
        let hidden = graph.input(super::check::UNET_INPUTS[2])?;
        let extra: Vec<String> = graph
            .inputs()?
            .into_iter()
            .filter(|i| ![sample.index, timestep.index, hidden.index].contains(&i.index))
            .map(|i| i.name)
            .collect();
        if !extra.is_empty() {
            return Err(SdError::model(format!(
                "{}: the UNet has inputs this pipeline does not provide: {extra:?} (SDXL and \
                 timestep-conditioned LCM UNets are not supported yet)",
                graph.path
            )));
        }
        check_dims(&graph.path, "sample", &sample.shape, &latent)?;
        check_dims(&graph.path, "encoder_hidden_states", &hidden.shape, &text_shape)?;
        let timestep_rank = match &timestep.shape {
            Some(s) if s.is_empty() => 0,
            Some(s) if s.len() == 1 => 1,
            None => 1,
            Some(s) => {
                return Err(SdError::model(format!("{}: timestep has rank {}; expected a scalar or [batch]", graph.path, s.len())))
            }
        };
        let timestep_type = match timestep.datum_type {
            Some(t @ (DatumType::I64 | DatumType::I32 | DatumType::F32 | DatumType::F64 | DatumType::F16)) => t,
            None => DatumType::I64,
            Some(other) => return Err(SdError::model(format!("{}: timestep has type {other:?}", graph.path))),
        };
        let sample_type = float_type(&sample);
        let hidden_type = float_type(&hidden);
        graph.pin_input(sample.index, sample_type, &latent)?;
        let ts_shape: &[usize] = if timestep_rank == 0 { &[] } else { &[1] };
        graph.pin_input(timestep.index, timestep_type, ts_shape)?;
        graph.pin_input(hidden.index, hidden_type, &text_shape)?;
        graph.keep_output("out_sample")?;
        Ok(Unet {
            plan: graph.into_plan()?,
            order: [sample.index, timestep.index, hidden.index],
            sample_type,
            timestep_type,
            timestep_rank,
            hidden_type,
        })
    }

    pub fn predict(
        &self,
        sample: &ndarray::ArrayD<f32>,
        timestep: f64,
        hidden: &ndarray::ArrayD<f32>,
    ) -> Result<ndarray::ArrayD<f32>> {
        // Integer timesteps truncate like diffusers' ONNX pipeline (`np.array([t], dtype)`).
        let t = match self.timestep_type {
            DatumType::I64 => Tensor::from(timestep as i64),
            DatumType::I32 => Tensor::from(timestep as i32),
            DatumType::F64 => Tensor::from(timestep),
            _ => float_tensor(ndarray::arr0(timestep as f32).into_dyn(), self.timestep_type)?,
        };
        let t = if self.timestep_rank == 1 {
            t.broadcast_into_rank(1).map_err(|e| SdError::runtime(format!("{e:?}")))?
        } else {
            t
        };
        let mut inputs: Vec<(usize, Tensor)> = vec![
            (self.order[0], float_tensor(sample.clone(), self.sample_type)?),
            (self.order[1], t),
            (self.order[2], float_tensor(hidden.clone(), self.hidden_type)?),
        ];
        inputs.sort_by_key(|(ix, _)| *ix);
        run_f32(&self.plan, inputs.into_iter().map(|(_, t)| t.into()).collect(), "UNet")
    }
}

/// Rejects a pinned shape that contradicts a fixed dimension of the export.
fn check_dims(path: &str, name: &str, declared: &Option<Vec<Option<usize>>>, wanted: &[usize]) -> Result<()> {
    let Some(declared) = declared else { return Ok(()) };
    let fits = declared.len() == wanted.len()
        && declared.iter().zip(wanted).enumerate().all(|(axis, (d, w))| axis == 0 || d.is_none_or(|d| d == *w));
    if fits {
        Ok(())
    } else {
        Err(SdError::model(format!(
            "{path}: input {name} has shape {declared:?} but the pipeline needs {wanted:?} \
             (fixed-size export? pass the --width/--height it was exported for, or re-export with dynamic axes)"
        )))
    }
}
