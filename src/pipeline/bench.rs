//! UNet load time and per-evaluation times at a square latent, for the benchmark script
//! (scripts/bench.py compares them with OpenVINO and onnxruntime on the same ONNX files).

use super::events::{load_network, Event, Hooks};
use crate::error::Result;
use crate::model_dir::{ModelDir, ModelFiles};
use crate::models::unet::guidance_embedding;
use crate::models::Unet;
use crate::rng::TorchRng;

#[derive(Debug, Clone)]
pub struct UnetBench {
    pub latent: usize,
    pub load_seconds: f64,
    pub run_seconds: Vec<f64>,
}

pub fn bench_unet(files: &dyn ModelFiles, latent: usize, runs: usize, hooks: &mut dyn Hooks) -> Result<UnetBench> {
    let dir = ModelDir::open(files)?;
    let latent_shape = [1, dir.unet_config_usize("in_channels", 4), latent, latent];
    let text_shape = [1, 77, dir.unet_config_usize("cross_attention_dim", 768)];
    let guidance_dim = dir.unet_guidance_embedding_dim();
    let (unet, load_seconds) =
        load_network(hooks, "UNet", || Unet::load(files, latent_shape, text_shape, guidance_dim, &Default::default()))?;
    let mut rng = TorchRng::new(0);
    let (sample, hidden) = (rng.randn(&latent_shape), rng.randn(&text_shape));
    // An LCM UNet at guidance 1, as LCM-LoRA runs.
    let guidance = guidance_dim.map(|dim| guidance_embedding(1.0, dim, 1));
    let mut run_seconds = Vec::with_capacity(runs);
    for index in 0..runs {
        let start = hooks.now();
        unet.predict(&sample, 500.0, &hidden, guidance.as_ref())?;
        let seconds = hooks.now() - start;
        run_seconds.push(seconds);
        hooks.event(&Event::Step { index: index + 1, total: runs, seconds, elapsed: run_seconds.iter().sum() });
    }
    Ok(UnetBench { latent, load_seconds, run_seconds })
}
