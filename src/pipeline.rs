//! Text-to-image as diffusers' StableDiffusionPipeline does it: tokenize, encode, denoise
//! with classifier-free guidance, decode. One network in memory at a time.

use crate::error::{ErrorKind, Result, SdError};
use crate::io::model_dir::{ModelDir, ModelFiles};
use crate::io::png::RgbImage;
use crate::models::{TextEncoder, Unet, VaeDecoder};
use crate::rng::TorchRng;
use crate::schedulers::{scheduler_from_config, Latents, SchedulerOptions};
use crate::tokenizer::ClipTokenizer;

/// Largest side we accept: beyond it the UNet's activations do not fit wasm32 memory.
pub const MAX_SIDE: u32 = 2048;
pub const MAX_STEPS: usize = 1000;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: String,
    /// None behaves like diffusers' default: an empty unconditional prompt.
    pub negative_prompt: Option<String>,
    /// None: the UNet's `sample_size` × the VAE scale factor.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: usize,
    pub guidance_scale: f32,
    pub seed: u64,
    /// A command-line scheduler name; None: the model's own scheduler.
    pub scheduler: Option<String>,
    pub eta: f32,
    /// Initial latents, unscaled (diffusers' `latents=`), shape [1, C, h, w].
    pub latents: Option<Latents>,
    pub vae: VaeChoice,
    /// Every K steps, an [`Event::Preview`] with a cheap picture of the current latents.
    pub preview_every: Option<usize>,
}

/// Which decoder turns latents into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeChoice {
    /// The model's own VAE decoder (`vae_decoder/`).
    #[default]
    Full,
    /// TAESD (`vae_decoder_taesd/`): a ~2.5M-parameter decoder, far faster and smaller,
    /// slightly softer pictures.
    Taesd,
}

impl VaeChoice {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "full" | "default" | "vae" => Some(VaeChoice::Full),
            "taesd" | "tiny" => Some(VaeChoice::Taesd),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            VaeChoice::Full => "full",
            VaeChoice::Taesd => "taesd",
        }
    }
    pub fn dir(self) -> &'static str {
        match self {
            VaeChoice::Full => "vae_decoder",
            VaeChoice::Taesd => "vae_decoder_taesd",
        }
    }
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompt: String::new(),
            negative_prompt: None,
            width: None,
            height: None,
            steps: 20,
            guidance_scale: 7.5,
            seed: 0,
            scheduler: None,
            eta: 0.0,
            latents: None,
            vae: VaeChoice::Full,
            preview_every: None,
        }
    }
}

/// What the pipeline reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    Loading { network: &'static str },
    Loaded { network: &'static str, seconds: f64 },
    Step { index: usize, total: usize, seconds: f64, elapsed: f64 },
    /// The latents after step `index`, as a small picture (one pixel per latent).
    Preview { index: usize, image: RgbImage },
    /// Summary of an intermediate tensor (`--verbose`): finds where NaNs or blow-ups start.
    Tensor { name: String, stats: TensorStats },
    Warning(String),
}

#[derive(Debug, Clone, Copy)]
pub struct TensorStats {
    pub mean: f64,
    pub std: f64,
    pub min: f32,
    pub max: f32,
    pub non_finite: usize,
}

impl TensorStats {
    pub fn of(t: &Latents) -> Self {
        let (mut sum, mut sq, mut min, mut max, mut non_finite, mut n) = (0f64, 0f64, f32::MAX, f32::MIN, 0, 0usize);
        for &v in t.iter() {
            if !v.is_finite() {
                non_finite += 1;
                continue;
            }
            sum += v as f64;
            sq += (v as f64) * (v as f64);
            min = min.min(v);
            max = max.max(v);
            n += 1;
        }
        let mean = sum / n.max(1) as f64;
        TensorStats { mean, std: (sq / n.max(1) as f64 - mean * mean).max(0.0).sqrt(), min, max, non_finite }
    }
}

/// Front ends observe progress, cancel, and tell the time (browsers have no std clock).
pub trait Hooks {
    fn event(&mut self, _event: &Event) {}
    /// Checked before every UNet evaluation; true stops the run with ErrorKind::Cancelled.
    fn cancelled(&self) -> bool {
        false
    }
    /// Seconds since some fixed point.
    fn now(&self) -> f64;
}

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub load_text_encoder: f64,
    pub load_unet: f64,
    pub load_vae: f64,
    pub text_encoding: f64,
    pub denoising: f64,
    pub decoding: f64,
    pub unet_evaluations: usize,
    pub total: f64,
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub image: RgbImage,
    pub scheduler: &'static str,
    pub steps: usize,
    pub timings: Timings,
    pub warnings: Vec<String>,
    pub model_name: String,
    pub model_identity: String,
}

/// Validates what can be checked without a model, so bad flags fail before any loading.
pub fn validate(req: &GenerateRequest) -> Result<()> {
    if req.steps == 0 || req.steps > MAX_STEPS {
        return Err(SdError::usage(format!("--steps must be between 1 and {MAX_STEPS}, got {}", req.steps)));
    }
    if !req.guidance_scale.is_finite() || req.guidance_scale < 0.0 || req.guidance_scale > 100.0 {
        return Err(SdError::usage(format!("--guidance-scale must be between 0 and 100, got {}", req.guidance_scale)));
    }
    if !req.eta.is_finite() || !(0.0..=1.0).contains(&req.eta) {
        return Err(SdError::usage(format!("--eta must be between 0 and 1, got {}", req.eta)));
    }
    for (flag, side) in [("--width", req.width), ("--height", req.height)] {
        if let Some(side) = side {
            if side == 0 || side % 8 != 0 || side > MAX_SIDE {
                return Err(SdError::usage(format!(
                    "{flag} must be a multiple of 8 between 8 and {MAX_SIDE}, got {side}"
                )));
            }
        }
    }
    if req.preview_every == Some(0) {
        return Err(SdError::usage("--preview-every must be at least 1"));
    }
    if let Some(name) = &req.scheduler {
        if !crate::schedulers::SCHEDULER_NAMES.contains(&name.as_str()) {
            return Err(SdError::usage(format!(
                "unknown scheduler {name:?}; choose one of {}",
                crate::schedulers::SCHEDULER_NAMES.join(", ")
            )));
        }
    }
    Ok(())
}

pub fn generate(files: &dyn ModelFiles, req: &GenerateRequest, hooks: &mut dyn Hooks) -> Result<Generated> {
    validate(req)?;
    let start = hooks.now();
    let dir = ModelDir::open(files)?;
    let mut timings = Timings::default();
    let mut warnings = Vec::new();
    let mut warn = |hooks: &mut dyn Hooks, text: String| {
        hooks.event(&Event::Warning(text.clone()));
        warnings.push(text);
    };

    // Sizes first: a wrong size should fail before seconds of loading.
    let scale = dir.vae_scale_factor().ok_or_else(|| {
        SdError::model(format!(
            "{}: vae_decoder/config.json (block_out_channels) is missing, so the VAE scale factor is unknown",
            files.describe()
        ))
    })?;
    let default_side = dir.unet_sample_size().map(|s| s * scale);
    let side = |given: Option<u32>, flag: &str| -> Result<u32> {
        let side = given.or(default_side).ok_or_else(|| {
            SdError::usage(format!("unet/config.json has no sample_size; pass {flag}"))
        })?;
        if side % scale != 0 {
            return Err(SdError::usage(format!("{flag} {side} is not a multiple of the VAE scale factor {scale}")));
        }
        Ok(side)
    };
    let (width, height) = (side(req.width, "--width")?, side(req.height, "--height")?);
    let decoder = req.vae.dir();
    if !files.exists(&format!("{decoder}/model.onnx")) {
        return Err(SdError::model(format!(
            "{}/{decoder}/model.onnx is missing: --vae {} needs it (scripts/convert.py --taesd adds TAESD)",
            files.describe(),
            req.vae.name()
        )));
    }
    let channels = dir.unet_config_usize("in_channels", 4);
    let latent_shape = [1, channels, (height / scale) as usize, (width / scale) as usize];

    let mut scheduler = scheduler_from_config(
        req.scheduler.as_deref(),
        &dir.scheduler_config,
        &SchedulerOptions { eta: req.eta },
    )
    .map_err(|e| SdError::model(format!("{}/scheduler/scheduler_config.json: {e}", files.describe())))?;
    scheduler.set_timesteps(req.steps).map_err(SdError::usage)?;
    let timesteps = scheduler.timesteps().to_vec();

    if let Some(latents) = &req.latents {
        if latents.shape() != latent_shape {
            return Err(SdError::usage(format!(
                "--latents has shape {:?}, but {width}x{height} with this model needs {:?}",
                latents.shape(),
                latent_shape
            )));
        }
    }

    // Text → embeddings.
    let tokenizer = ClipTokenizer::from_files(&dir.tokenizer).map_err(|e| {
        SdError::model(format!("{}/tokenizer: {e}", files.describe()))
    })?;
    let guided = req.guidance_scale > 1.0;
    let cond_ids = tokenizer.encode_padded(&req.prompt).map_err(SdError::runtime)?;
    if let Some(removed) = &cond_ids.removed_text {
        warn(hooks, format!("the prompt is longer than the text encoder's {} tokens; this part was cut off: {removed:?}", cond_ids.ids.len()));
    }
    let uncond_ids = if guided {
        let neg = tokenizer.encode_padded(req.negative_prompt.as_deref().unwrap_or("")).map_err(SdError::runtime)?;
        if let Some(removed) = &neg.removed_text {
            warn(hooks, format!("the negative prompt was cut off after {} tokens: {removed:?}", neg.ids.len()));
        }
        Some(neg.ids)
    } else {
        None
    };
    let seq_len = cond_ids.ids.len();
    let (cond, uncond) = {
        let (encoder, seconds) = load_network(hooks, "text encoder", || TextEncoder::load(files, seq_len))?;
        timings.load_text_encoder = seconds;
        let t = hooks.now();
        let cond = encoder.encode(&cond_ids.ids)?;
        let uncond = uncond_ids.map(|ids| encoder.encode(&ids)).transpose()?;
        hooks.event(&Event::Tensor { name: "text embeddings".into(), stats: TensorStats::of(&cond) });
        timings.text_encoding = hooks.now() - t;
        (cond, uncond)
    };
    let text_shape: [usize; 3] = cond
        .shape()
        .try_into()
        .map_err(|_| SdError::model(format!("text encoder output has shape {:?}; expected [1, tokens, dim]", cond.shape())))?;

    // Denoising.
    let mut rng = TorchRng::new(req.seed);
    let mut latents = match &req.latents {
        Some(l) => l.clone(),
        None => rng.randn(&latent_shape),
    };
    latents *= scheduler.init_noise_sigma();
    hooks.event(&Event::Tensor { name: "initial latents".into(), stats: TensorStats::of(&latents) });
    {
        let (unet, seconds) = load_network(hooks, "UNet", || Unet::load(files, latent_shape, text_shape))?;
        timings.load_unet = seconds;
        let loop_start = hooks.now();
        for (index, &t) in timesteps.iter().enumerate() {
            if hooks.cancelled() {
                return Err(SdError::new(ErrorKind::Cancelled, "cancelled"));
            }
            let step_start = hooks.now();
            let input = scheduler.scale_model_input(&latents, t);
            let mut noise_pred = unet.predict(&input, t, &cond)?;
            if let Some(uncond) = &uncond {
                let noise_uncond = unet.predict(&input, t, uncond)?;
                // uncond + g * (text - uncond), in diffusers' order of operations.
                noise_pred = &noise_uncond + &((&noise_pred - &noise_uncond) * req.guidance_scale);
                timings.unet_evaluations += 1;
            }
            timings.unet_evaluations += 1;
            hooks.event(&Event::Tensor { name: format!("UNet output, step {}", index + 1), stats: TensorStats::of(&noise_pred) });
            latents = scheduler
                .step(&noise_pred, t, &latents, &mut rng)
                .map_err(|e| SdError::runtime(format!("scheduler step {index}: {e}")))?;
            let now = hooks.now();
            hooks.event(&Event::Step { index: index + 1, total: timesteps.len(), seconds: now - step_start, elapsed: now - loop_start });
            if req.preview_every.is_some_and(|k| (index + 1) % k == 0 && index + 1 < timesteps.len()) {
                if let Some(image) = crate::preview::latent_preview(&latents) {
                    hooks.event(&Event::Preview { index: index + 1, image });
                }
            }
        }
        timings.denoising = hooks.now() - loop_start;
    }

    // Latents → pixels.
    let (vae, seconds) = load_network(hooks, "VAE decoder", || VaeDecoder::load(files, decoder, latent_shape, scale))?;
    timings.load_vae = seconds;
    let t = hooks.now();
    let decoded = vae.decode(&(latents / dir.decoder_scaling_factor(decoder)?))?;
    hooks.event(&Event::Tensor { name: "decoded image".into(), stats: TensorStats::of(&decoded) });
    drop(vae);
    let image = to_rgb8(&decoded)?;
    timings.decoding = hooks.now() - t;
    timings.total = hooks.now() - start;
    Ok(Generated {
        image,
        scheduler: scheduler.name(),
        steps: req.steps,
        timings,
        warnings,
        model_name: dir.name(),
        model_identity: dir.identity.clone(),
    })
}

/// Loads one network, telling the hooks before and after; returns it with its load time.
fn load_network<T>(hooks: &mut dyn Hooks, network: &'static str, load: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let start = hooks.now();
    hooks.event(&Event::Loading { network });
    let loaded = load()?;
    let seconds = hooks.now() - start;
    hooks.event(&Event::Loaded { network, seconds });
    Ok((loaded, seconds))
}

/// [1, 3, H, W] in [-1, 1] → RGB8, exactly as diffusers' postprocess + numpy_to_pil:
/// (x / 2 + 0.5).clamp(0, 1), then (x * 255).round() with ties to even.
pub fn to_rgb8(decoded: &Latents) -> Result<RgbImage> {
    let shape = decoded.shape();
    if shape.len() != 4 || shape[0] != 1 || shape[1] != 3 {
        return Err(SdError::model(format!("the VAE decoder returned shape {shape:?}; expected [1, 3, H, W]")));
    }
    let (h, w) = (shape[2], shape[3]);
    let mut pixels = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = (decoded[[0, c, y, x]] / 2.0 + 0.5).clamp(0.0, 1.0);
                let v = if v.is_nan() { 0.0 } else { v };
                pixels.push((v * 255.0).round_ties_even() as u8);
            }
        }
    }
    Ok(RgbImage { width: w as u32, height: h as u32, pixels })
}

/// UNet load time and per-evaluation times at a square latent, for the benchmark script
/// (scripts/bench.py compares them with OpenVINO and onnxruntime on the same ONNX files).
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
    let (unet, load_seconds) = load_network(hooks, "UNet", || Unet::load(files, latent_shape, text_shape))?;
    let mut rng = TorchRng::new(0);
    let (sample, hidden) = (rng.randn(&latent_shape), rng.randn(&text_shape));
    let mut run_seconds = Vec::with_capacity(runs);
    for index in 0..runs {
        let start = hooks.now();
        unet.predict(&sample, 500.0, &hidden)?;
        let seconds = hooks.now() - start;
        run_seconds.push(seconds);
        hooks.event(&Event::Step { index: index + 1, total: runs, seconds, elapsed: run_seconds.iter().sum() });
    }
    Ok(UnetBench { latent, load_seconds, run_seconds })
}
