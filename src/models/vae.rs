//! VAE decoder (the model's own or TAESD): latents (already divided by its scaling factor)
//! → image in [-1, 1].

use super::{float_tensor, float_type, run_f32, OnnxGraph, Plan};
use crate::error::Result;
use crate::io::model_dir::ModelFiles;
use tract_onnx::prelude::tvec;

pub struct VaeDecoder {
    plan: Plan,
    latent_type: tract_onnx::prelude::DatumType,
}

impl VaeDecoder {
    /// `dir`: `vae_decoder` or `vae_decoder_taesd` (same interface: latents in, [-1, 1] out).
    /// `scale`: the VAE scale factor (output side / latent side), for the memory check.
    pub fn load(files: &dyn ModelFiles, dir: &str, latent: [usize; 4], scale: u32) -> Result<Self> {
        let working = super::memory::vae_working(&latent, scale);
        let mut graph = OnnxGraph::load(files, &format!("{dir}/model.onnx"), |_| working)?;
        let input = graph.input(&["latent_sample", "latent", "z"])?;
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
