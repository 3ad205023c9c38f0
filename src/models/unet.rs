//! The denoising UNet: (latents, timestep, text embeddings[, guidance embedding]) → noise (or
//! v) prediction. Pinned to batch 1: classifier-free guidance runs it twice, which keeps the
//! peak memory of a full-size UNet inside wasm32's address space. An LCM UNet takes guidance
//! as an embedding (`timestep_cond`) instead.

use super::lora::Merge;
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
    /// An LCM UNet's `timestep_cond`: its input index and type.
    guidance: Option<(usize, DatumType)>,
}

impl Unet {
    /// The optimized network.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Checks that the UNet at `latent` can have its memory (weights and a run's working
    /// memory), without loading it: the job's largest network, asked for before the first one
    /// loads.
    pub fn reserve(files: &dyn ModelFiles, latent: [usize; 4]) -> Result<()> {
        OnnxGraph::reserve(files, UNET, |proto, weights| super::memory::unet_working(proto, weights, &latent))
    }

    /// `guidance_dim`: the width of the guidance embedding unet/config.json declares
    /// (`time_cond_proj_dim`), which the network must then take as `timestep_cond`. `loras`:
    /// the LoRAs merged into its weights ([`super::lora::plan`]).
    pub fn load(
        files: &dyn ModelFiles,
        latent: [usize; 4],
        text_shape: [usize; 3],
        guidance_dim: Option<usize>,
        loras: &Merge,
    ) -> Result<Self> {
        let working = |proto: &_, weights| super::memory::unet_working(proto, weights, &latent);
        let mut graph = OnnxGraph::load_merged(files, UNET, working, loras)?;
        let sample = graph.input(super::check::UNET_INPUTS[0])?;
        let timestep = graph.input(super::check::UNET_INPUTS[1])?;
        let hidden = graph.input(super::check::UNET_INPUTS[2])?;
        let inputs = graph.inputs()?;
        let guidance_input = inputs.iter().find(|i| super::check::GUIDANCE_EMBEDDING_INPUT.contains(&i.name.as_str()));
        let guidance = match (guidance_input, guidance_dim) {
            (Some(input), Some(dim)) => {
                let shape = [latent[0], dim];
                check_dims(&graph.path, &input.name, &input.shape, &shape)?;
                let dt = float_type(input);
                graph.pin_input(input.index, dt, &shape)?;
                Some((input.index, dt))
            }
            (None, None) => None,
            (Some(input), None) => {
                return Err(SdError::model(format!(
                    "{}: the UNet takes {} (a guidance embedding, as LCM UNets do), but unet/config.json \
                     declares no time_cond_proj_dim, its width",
                    graph.path, input.name
                )))
            }
            (None, Some(dim)) => {
                return Err(SdError::model(format!(
                    "{}: unet/config.json declares time_cond_proj_dim {dim} (an LCM UNet), but the network has no \
                     timestep_cond input: export it again (scripts/convert.py exports it)",
                    graph.path
                )))
            }
        };
        let known = [Some(sample.index), Some(timestep.index), Some(hidden.index), guidance.map(|(ix, _)| ix)];
        let extra: Vec<String> =
            inputs.into_iter().filter(|i| !known.contains(&Some(i.index))).map(|i| i.name).collect();
        if !extra.is_empty() {
            return Err(SdError::model(format!(
                "{}: the UNet has inputs this pipeline does not provide: {extra:?} (SDXL UNets are not \
                 supported yet)",
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
            guidance,
        })
    }

    /// `guidance`: the guidance embedding ([`guidance_embedding`]) for a UNet that takes one
    /// (loaded with a `guidance_dim`); ignored by any other.
    pub fn predict(
        &self,
        sample: &ndarray::ArrayD<f32>,
        timestep: f64,
        hidden: &ndarray::ArrayD<f32>,
        guidance: Option<&ndarray::ArrayD<f32>>,
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
        if let Some((index, dt)) = self.guidance {
            let embedding = guidance.ok_or_else(|| SdError::runtime("the UNet needs a guidance embedding"))?;
            inputs.push((index, float_tensor(embedding.clone(), dt)?));
        }
        inputs.sort_by_key(|(ix, _)| *ix);
        run_f32(&self.plan, inputs.into_iter().map(|(_, t)| t.into()).collect(), "UNet")
    }
}

/// diffusers' `get_guidance_scale_embedding(w = guidance_scale - 1, embedding_dim = dim)` for
/// each of `batch` pictures, as its LCM pipeline feeds `timestep_cond`: sinusoids of 1000·w, in
/// f32 as torch computes them, [sin … | cos …] (a zero column padding an odd width).
pub fn guidance_embedding(guidance_scale: f32, dim: usize, batch: usize) -> ndarray::ArrayD<f32> {
    // guidance_scale - 1 is a Python float (f64), made an f32 tensor.
    let w = (guidance_scale as f64 - 1.0) as f32 * 1000.0;
    let half = dim / 2;
    let step = crate::math::lnf(10000.0) / (half as f32 - 1.0);
    let mut row = vec![0f32; dim];
    for i in 0..half {
        let x = w * crate::math::expf(i as f32 * -step);
        (row[i], row[half + i]) = (crate::math::sinf(x), crate::math::cosf(x));
    }
    let rows: Vec<f32> = (0..batch).flat_map(|_| row.iter().copied()).collect();
    ndarray::ArrayD::from_shape_vec(vec![batch, dim], rows).expect("batch × dim values")
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
