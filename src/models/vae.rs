//! The VAE: its decoder (the model's own or TAESD) turns latents (already divided by the
//! scaling factor) into an image in [-1, 1]; its encoder turns an image into latents for
//! image-to-image and inpainting.

use super::{float_tensor, float_type, run_f32, OnnxGraph, Plan};
use crate::error::{Result, SdError};
use crate::model_dir::{ModelFiles, VAE_ENCODER};
use tract_onnx::prelude::tvec;

pub struct VaeDecoder {
    plan: Plan,
    latent_type: tract_onnx::prelude::DatumType,
}

impl VaeDecoder {
    /// The optimized network.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// `dir`: `vae_decoder` or `vae_decoder_taesd` (same interface: latents in, [-1, 1] out).
    /// `scale`: the VAE scale factor (output side / latent side), for the memory check.
    pub fn load(files: &dyn ModelFiles, dir: &str, latent: [usize; 4], scale: u32) -> Result<Self> {
        let working = super::memory::vae_working(&latent, scale);
        let mut graph = OnnxGraph::load(files, &format!("{dir}/model.onnx"), |_, _| working)?;
        let input = graph.input(super::check::VAE_DECODER_INPUTS[0])?;
        let latent_type = float_type(&input);
        graph.pin_input(input.index, latent_type, &latent)?;
        graph.keep_output("sample")?;
        Ok(VaeDecoder { plan: graph.into_plan()?, latent_type })
    }

    /// Returns [1, 3, H, W] in roughly [-1, 1].
    pub fn decode(&self, latents: &ndarray::ArrayD<f32>) -> Result<ndarray::ArrayD<f32>> {
        let input = float_tensor(latents.clone(), self.latent_type)?;
        run_f32(&self.plan, tvec!(input.into()), "VAE decoder")
    }
}

/// What the encoder returns: optimum exports the latent distribution's parameters (mean and
/// log-variance, 2 × latent channels, `latent_parameters`); other exports return a latent
/// (`latent_sample`, latent channels), used as it is.
#[derive(Debug, Clone)]
pub enum Encoded {
    Parameters(ndarray::ArrayD<f32>),
    Latent(ndarray::ArrayD<f32>),
}

impl Encoded {
    pub fn tensor(&self) -> &ndarray::ArrayD<f32> {
        match self {
            Encoded::Parameters(t) | Encoded::Latent(t) => t,
        }
    }
}

pub struct VaeEncoder {
    plan: Plan,
    image_type: tract_onnx::prelude::DatumType,
    latent_channels: usize,
}

impl VaeEncoder {
    /// `image`: [1, 3, H, W]; `latent`: the latent shape it encodes to ([1, C, H/f, W/f]).
    pub fn load(files: &dyn ModelFiles, image: [usize; 4], latent: [usize; 4], scale: u32) -> Result<Self> {
        if !files.exists(VAE_ENCODER) {
            return Err(SdError::model(format!(
                "{}/{VAE_ENCODER} is missing: image-to-image and inpainting need the VAE encoder \
                 (optimum and scripts/convert.py export it)",
                files.describe()
            )));
        }
        let working = super::memory::vae_working(&latent, scale);
        let mut graph = OnnxGraph::load(files, VAE_ENCODER, |_, _| working)?;
        let input = graph.input(super::check::VAE_ENCODER_INPUTS[0])?;
        let image_type = float_type(&input);
        graph.pin_input(input.index, image_type, &image)?;
        graph.keep_output("latent_parameters")?;
        Ok(VaeEncoder { plan: graph.into_plan()?, image_type, latent_channels: latent[1] })
    }

    /// `image` in [-1, 1], [1, 3, H, W].
    pub fn encode(&self, image: &ndarray::ArrayD<f32>) -> Result<Encoded> {
        let input = float_tensor(image.clone(), self.image_type)?;
        let out = run_f32(&self.plan, tvec!(input.into()), "VAE encoder")?;
        match out.shape().get(1) {
            Some(&c) if c == 2 * self.latent_channels => Ok(Encoded::Parameters(out)),
            Some(&c) if c == self.latent_channels => Ok(Encoded::Latent(out)),
            _ => Err(SdError::model(format!(
                "the VAE encoder returned shape {:?}; expected {} (latent) or {} (mean and log-variance) channels",
                out.shape(),
                self.latent_channels,
                2 * self.latent_channels
            ))),
        }
    }
}
