//! One network's load time and per-run times, for the benchmark script (scripts/bench.py
//! compares them with OpenVINO, onnxruntime and onnxruntime-web on the same ONNX files).

use super::events::{load_network, Event, Hooks};
use crate::error::{Result, SdError};
use crate::model_dir::{ModelDir, ModelFiles};
use crate::models::unet::guidance_embedding;
use crate::models::{TextEncoder, Unet, VaeDecoder};
use crate::request::VaeChoice;
use crate::rng::TorchRng;

/// The networks `--bench` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchNetwork {
    Unet,
    VaeDecoder,
    TaesdDecoder,
    TextEncoder,
}

impl BenchNetwork {
    pub const ALL: [BenchNetwork; 4] = [Self::Unet, Self::VaeDecoder, Self::TaesdDecoder, Self::TextEncoder];

    /// The name `--bench` takes and the JSON line gives.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::VaeDecoder => "vae-decoder",
            Self::TaesdDecoder => "taesd-decoder",
            Self::TextEncoder => "text-encoder",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct NetworkBench {
    pub network: BenchNetwork,
    /// The latent side (the decoders' output is `scale` times that); unused by the text encoder.
    pub latent: usize,
    pub load_seconds: f64,
    /// The first run, untimed in `run_seconds`: it pays the first touch of the memory the run
    /// uses (page faults) and any lazy setup, as the peers' warm-up runs do in scripts/bench.py.
    pub warmup_seconds: f64,
    pub run_seconds: Vec<f64>,
    /// Weights fed and widened on every run: 0 where they were packed once at load.
    pub weights_per_run: usize,
}

/// Loads `network` for an `latent`×`latent` latent (the text encoder: 77 tokens) and runs it
/// once to warm up, then `runs` timed times, on random inputs of the right shapes.
pub fn bench_network(
    files: &dyn ModelFiles,
    network: BenchNetwork,
    latent: usize,
    runs: usize,
    hooks: &mut dyn Hooks,
) -> Result<NetworkBench> {
    let dir = ModelDir::open(files)?;
    let mut rng = TorchRng::new(0);
    // The ids of one prompt chunk, as the pipeline's text encoder and UNet take them.
    let text_len = crate::prompt::CHUNK_TOKENS + 2;
    let (run, load_seconds, weights_per_run): (Box<dyn Fn() -> Result<()>>, f64, usize) = match network {
        BenchNetwork::Unet => {
            let latent_shape = [1, dir.unet_config_usize("in_channels", 4), latent, latent];
            let text_shape = [1, text_len, dir.unet_config_usize("cross_attention_dim", 768)];
            let guidance_dim = dir.unet_guidance_embedding_dim();
            let (unet, seconds) = load_network(hooks, "UNet", || {
                Unet::load(files, latent_shape, text_shape, guidance_dim, &Default::default())
            })?;
            let (sample, hidden) = (rng.randn(&latent_shape), rng.randn(&text_shape));
            // An LCM UNet at guidance 1, as LCM-LoRA runs.
            let guidance = guidance_dim.map(|dim| guidance_embedding(1.0, dim, 1));
            let per_run = unet.plan().weights_per_run();
            (Box::new(move || unet.predict(&sample, 500.0, &hidden, guidance.as_ref()).map(drop)), seconds, per_run)
        }
        BenchNetwork::VaeDecoder | BenchNetwork::TaesdDecoder => {
            let folder = if network == BenchNetwork::VaeDecoder { VaeChoice::Full } else { VaeChoice::Taesd }.dir();
            let scale = dir
                .vae_scale_factor()?
                .ok_or_else(|| SdError::model("vae_decoder/config.json has no block_out_channels: the VAE scale is unknown"))?;
            let shape = [1, dir.vae_config_usize("latent_channels", 4), latent, latent];
            let (vae, seconds) = load_network(hooks, "VAE decoder", || VaeDecoder::load(files, folder, shape, scale))?;
            let latents = rng.randn(&shape);
            let per_run = vae.plan().weights_per_run();
            (Box::new(move || vae.decode(&latents).map(drop)), seconds, per_run)
        }
        BenchNetwork::TextEncoder => {
            let (encoder, seconds) =
                load_network(hooks, "text encoder", || TextEncoder::load(files, text_len, 1, &Default::default()))?;
            // Start, a few words, then end tokens as padding (CLIP's ids).
            let mut ids = vec![49406, 320, 1125, 539, 320, 2103];
            ids.resize(text_len, 49407);
            let per_run = encoder.plan().weights_per_run();
            (Box::new(move || encoder.encode(&ids).map(drop)), seconds, per_run)
        }
    };
    // Step 1 is the warm-up.
    let mut seconds_each = Vec::with_capacity(runs + 1);
    for index in 0..=runs {
        let start = hooks.now();
        run()?;
        let seconds = hooks.now() - start;
        seconds_each.push(seconds);
        hooks.event(&Event::Step { index: index + 1, total: runs + 1, seconds, elapsed: seconds_each.iter().sum() });
    }
    let warmup_seconds = seconds_each.remove(0);
    Ok(NetworkBench { network, latent, load_seconds, warmup_seconds, run_seconds: seconds_each, weights_per_run })
}
