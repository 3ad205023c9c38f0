//! Text-to-image as diffusers' StableDiffusionPipeline does it: tokenize, encode, denoise
//! with classifier-free guidance, decode. Image-to-image and inpainting (diffusers'
//! StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline) are the same loop with
//! other starting latents, a cut schedule and, for inpainting, a mask. One network in memory
//! at a time.

use crate::error::{ErrorKind, Result, SdError};
use crate::io::model_dir::{ModelDir, ModelFiles};
use crate::io::image::{resize_lanczos, to_gray};
use crate::io::png::RgbImage;
use crate::models::vae::Encoded;
use crate::models::{TextEncoder, Unet, VaeDecoder, VaeEncoder};
use crate::rng::TorchRng;
use crate::schedulers::{pipeline_scheduler, Scheduler, SchedulerKind, SchedulerOptions};
use crate::tensor::{Latents, NoiseSource};
use crate::tokenizer::ClipTokenizer;

/// Largest side we accept: beyond it the UNet's activations do not fit wasm32 memory.
pub const MAX_SIDE: u32 = 2048;
pub const MAX_STEPS: usize = 1000;
pub const MAX_IMAGES: usize = 10_000;

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
    /// Image-to-image (and inpainting, with a mask) instead of text-to-image.
    pub init: Option<InitImage>,
    /// Pictures to make, with seeds `seed`, `seed + 1`, … (each its own generator).
    pub num_images: usize,
    /// How many pictures go through the UNet at once.
    pub batch_size: usize,
    /// Scheduler config keys given on the command line (the seed system's beta flags).
    pub scheduler_overrides: SchedulerOverrides,
}

/// The picture to start from, and how far to move away from it.
#[derive(Debug, Clone)]
pub struct InitImage {
    pub image: RgbImage,
    /// In (0, 1]: the fraction of the schedule that runs (diffusers' `strength`); 1 starts
    /// from (almost) pure noise.
    pub strength: f32,
    /// White (from 128 up, after PIL's grayscale conversion) = repaint, black = keep.
    pub mask: Option<RgbImage>,
}

/// `beta_start`, `beta_end`, `beta_schedule` over the model's scheduler_config.json.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerOverrides {
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
}

impl SchedulerOverrides {
    pub const BETA_SCHEDULES: [&'static str; 3] = ["linear", "scaled_linear", "squaredcos_cap_v2"];

    /// Writes the given keys into the config, and takes them out of `_use_default_values`
    /// (which would otherwise make from_config ignore them).
    pub fn apply(&self, config: &mut serde_json::Value) {
        let Some(map) = config.as_object_mut() else { return };
        let mut set = |key: &str, value: serde_json::Value| {
            map.insert(key.to_string(), value);
            if let Some(serde_json::Value::Array(defaults)) = map.get_mut("_use_default_values") {
                defaults.retain(|d| d.as_str() != Some(key));
            }
        };
        if let Some(v) = self.beta_start {
            set("beta_start", v.into());
        }
        if let Some(v) = self.beta_end {
            set("beta_end", v.into());
        }
        if let Some(v) = &self.beta_schedule {
            set("beta_schedule", v.clone().into());
        }
    }
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
            init: None,
            num_images: 1,
            batch_size: 1,
            scheduler_overrides: SchedulerOverrides::default(),
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
    pub load_vae_encoder: f64,
    pub text_encoding: f64,
    pub image_encoding: f64,
    pub denoising: f64,
    pub decoding: f64,
    pub unet_evaluations: usize,
    pub total: f64,
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub image: RgbImage,
    /// This picture's seed (`seed + i` for the i-th of `num_images`).
    pub seed: u64,
    pub scheduler: &'static str,
    pub steps: usize,
    /// Steps actually run: `steps`, or fewer with an init image (strength < 1).
    pub denoising_steps: usize,
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
    if let Some(init) = &req.init {
        if !init.strength.is_finite() || init.strength <= 0.0 || init.strength > 1.0 {
            return Err(SdError::usage(format!("--strength must be in (0, 1], got {}", init.strength)));
        }
        if req.latents.is_some() {
            return Err(SdError::usage("--latents and --init-image cannot be combined: the init image makes the latents"));
        }
    }
    if req.num_images == 0 || req.num_images > MAX_IMAGES {
        return Err(SdError::usage(format!("--num-images must be between 1 and {MAX_IMAGES}, got {}", req.num_images)));
    }
    if req.batch_size == 0 {
        return Err(SdError::usage("--batch-size must be at least 1"));
    }
    if req.seed.checked_add(req.num_images as u64 - 1).is_none() {
        return Err(SdError::usage("--seed + --num-images goes past the largest seed"));
    }
    let o = &req.scheduler_overrides;
    for (flag, v) in [("--beta-start", o.beta_start), ("--beta-end", o.beta_end)] {
        if v.is_some_and(|v| !v.is_finite() || v <= 0.0 || v >= 1.0) {
            return Err(SdError::usage(format!("{flag} must be between 0 and 1 (exclusive), got {}", v.unwrap_or(0.0))));
        }
    }
    if let (Some(a), Some(b)) = (o.beta_start, o.beta_end) {
        if a > b {
            return Err(SdError::usage(format!("--beta-start {a} is larger than --beta-end {b}")));
        }
    }
    if let Some(s) = &o.beta_schedule {
        if !SchedulerOverrides::BETA_SCHEDULES.contains(&s.as_str()) {
            return Err(SdError::usage(format!(
                "--beta-schedule {s:?} is not known; choose one of {}",
                SchedulerOverrides::BETA_SCHEDULES.join(", ")
            )));
        }
    }
    if let Some(name) = &req.scheduler {
        if SchedulerKind::parse(name).is_none() {
            return Err(SdError::usage(format!(
                "unknown scheduler {name:?}; choose one of {}",
                SchedulerKind::cli_names()
            )));
        }
    }
    Ok(())
}

/// One picture: [`generate_all`] for a request of one image.
pub fn generate(files: &dyn ModelFiles, req: &GenerateRequest, hooks: &mut dyn Hooks) -> Result<Generated> {
    if req.num_images != 1 {
        return Err(SdError::usage("generate() makes one picture; call generate_all for --num-images > 1"));
    }
    let mut all = generate_all(files, req, hooks)?;
    Ok(all.remove(0))
}

/// Text-to-image, image-to-image and inpainting through one denoising loop: `req.num_images`
/// pictures with seeds `seed`, `seed + 1`, …, `req.batch_size` of them through the UNet at a
/// time. Each picture draws all its noise from its own generator, so it is the same picture
/// whatever the batch (diffusers with one `torch.Generator` per image).
pub fn generate_all(files: &dyn ModelFiles, req: &GenerateRequest, hooks: &mut dyn Hooks) -> Result<Vec<Generated>> {
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
    // An init image sets the size (rounded down to what the UNet takes) unless it is given.
    let from_image = |side: u32| {
        let step = scale.max(8);
        side - side % step
    };
    let default_side = dir.unet_sample_size().map(|s| s * scale);
    let side = |given: Option<u32>, image: Option<u32>, flag: &str| -> Result<u32> {
        let side = match (given, image) {
            (Some(s), _) => s,
            (None, Some(i)) if from_image(i) == 0 => {
                return Err(SdError::usage(format!("--init-image is {i} pixels on a side; it needs at least {}", scale.max(8))))
            }
            (None, Some(i)) => from_image(i),
            (None, None) => default_side.ok_or_else(|| SdError::usage(format!("unet/config.json has no sample_size; pass {flag}")))?,
        };
        if side % scale != 0 {
            return Err(SdError::usage(format!("{flag} {side} is not a multiple of the VAE scale factor {scale}")));
        }
        Ok(side)
    };
    let init = req.init.as_ref();
    let width = side(req.width, init.map(|i| i.image.width), "--width")?;
    let height = side(req.height, init.map(|i| i.image.height), "--height")?;
    let decoder = req.vae.dir();
    if !files.exists(&format!("{decoder}/model.onnx")) {
        return Err(SdError::model(format!(
            "{}/{decoder}/model.onnx is missing: --vae {} needs it (scripts/convert.py --taesd adds TAESD)",
            files.describe(),
            req.vae.name()
        )));
    }
    let latent_channels = dir.vae_config_usize("latent_channels", 4);
    let unet_channels = dir.unet_config_usize("in_channels", latent_channels);
    let inpainting_unet = unet_channels == 2 * latent_channels + 1;
    if unet_channels != latent_channels && !inpainting_unet {
        return Err(SdError::model(format!(
            "{}/unet/config.json: in_channels {unet_channels}; expected {latent_channels} (a regular UNet) or {} (an inpainting UNet)",
            files.describe(),
            2 * latent_channels + 1
        )));
    }
    if inpainting_unet && init.is_none_or(|i| i.mask.is_none()) {
        return Err(SdError::usage(format!(
            "this model's UNet is an inpainting UNet ({unet_channels} input channels): give --init-image and --mask"
        )));
    }
    let (h, w) = ((height / scale) as usize, (width / scale) as usize);
    let one_latent = [1, latent_channels, h, w];

    // The scheduler, fresh for each batch (multistep schedulers keep state); an init image
    // cuts the schedule as diffusers' get_timesteps does.
    let mut config = dir.scheduler_config.clone();
    req.scheduler_overrides.apply(&mut config);
    let new_scheduler = || -> Result<(Box<dyn Scheduler>, Vec<f64>)> {
        let mut scheduler = pipeline_scheduler(req.scheduler.as_deref(), &config, &SchedulerOptions { eta: req.eta })
            .map_err(|e| SdError::model(format!("{}/scheduler/scheduler_config.json: {e}", files.describe())))?;
        scheduler.set_timesteps(req.steps).map_err(SdError::usage)?;
        let mut timesteps = scheduler.timesteps().to_vec();
        if let Some(init) = init {
            let t_start = strength_start(req.steps, init.strength);
            // Every scheduler here has diffusers' `order` 1.
            timesteps.drain(..t_start.min(timesteps.len()));
            scheduler.set_begin_index(t_start);
        }
        Ok((scheduler, timesteps))
    };
    let (probe, timesteps) = new_scheduler()?;
    let scheduler_name = probe.name();
    drop(probe);
    // diffusers' inpaint pipeline refuses this (its img2img would run PNDM's extra step alone).
    if timesteps.is_empty() || init.is_some_and(|i| strength_start(req.steps, i.strength) == req.steps) {
        let strength = init.map_or(1.0, |i| i.strength);
        return Err(SdError::usage(format!(
            "--strength {strength} with {} steps runs no step (diffusers runs int(steps × strength)); raise --strength or --steps",
            req.steps
        )));
    }

    if let Some(latents) = &req.latents {
        if latents.shape() != one_latent {
            return Err(SdError::usage(format!(
                "--latents has shape {:?}, but {width}x{height} with this model needs {:?}",
                latents.shape(),
                one_latent
            )));
        }
    }
    // The init image and mask at the output size, as diffusers' VaeImageProcessor makes them.
    let conditioning = match init {
        Some(init) => Some(Conditioning::prepare(init, width, height, (h, w), |text| warn(hooks, text))?),
        None => None,
    };

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

    // Image → latents (the encoder's output; sampled per picture below).
    let encoded = match &conditioning {
        Some(c) => {
            let image_shape = [1, 3, height as usize, width as usize];
            let (encoder, seconds) = load_network(hooks, "VAE encoder", || VaeEncoder::load(files, image_shape, one_latent, scale))?;
            timings.load_vae_encoder = seconds;
            let t = hooks.now();
            let image = encoder.encode(&c.image)?;
            let masked = c.masked_image.as_ref().map(|m| encoder.encode(m)).transpose()?;
            timings.image_encoding = hooks.now() - t;
            Some((image, masked))
        }
        None => None,
    };
    let scaling = dir.vae_scaling_factor();

    // Denoising, batch by batch, through one UNet.
    let batch_size = req.batch_size.clamp(1, req.num_images);
    let seeds: Vec<u64> = (0..req.num_images as u64).map(|i| req.seed.wrapping_add(i)).collect();
    let mut finals: Vec<Latents> = Vec::with_capacity(seeds.len());
    {
        let unet_shape = [batch_size, unet_channels, h, w];
        let cond_shape = [batch_size, text_shape[1], text_shape[2]];
        let mut unet: Option<(Unet, usize)> = None;
        let batches: Vec<&[u64]> = seeds.chunks(batch_size).collect();
        let total = timesteps.len() * batches.len();
        let loop_start = hooks.now();
        for (batch_index, batch) in batches.iter().enumerate() {
            let n = batch.len();
            // A last, smaller batch needs the UNet pinned to its size.
            if unet.as_ref().is_none_or(|(_, b)| *b != n) {
                drop(unet.take()); // one UNet in memory at a time
                let (loaded, seconds) = load_network(hooks, "UNet", || {
                    Unet::load(files, [n, unet_shape[1], h, w], [n, cond_shape[1], cond_shape[2]])
                })?;
                timings.load_unet += seconds;
                unet = Some((loaded, n));
            }
            let Some((unet, _)) = &unet else { unreachable!() };
            let (mut scheduler, timesteps) = new_scheduler()?;
            let mut rngs = BatchRng(batch.iter().map(|&s| TorchRng::new(s)).collect());
            let start = prepare_batch(req, &mut rngs, scheduler.as_mut(), &timesteps, one_latent, scaling, &conditioning, &encoded, inpainting_unet)?;
            let mut latents = start.latents;
            hooks.event(&Event::Tensor { name: "initial latents".into(), stats: TensorStats::of(&latents) });
            let cond = repeat_batch(&cond, n);
            let uncond = uncond.as_ref().map(|u| repeat_batch(u, n));
            for (index, &t) in timesteps.iter().enumerate() {
                if hooks.cancelled() {
                    return Err(SdError::new(ErrorKind::Cancelled, "cancelled"));
                }
                let step_start = hooks.now();
                let mut input = scheduler.scale_model_input(&latents, t);
                if let Some(extra) = &start.unet_extra {
                    input = ndarray::concatenate(ndarray::Axis(1), &[input.view(), extra.view()])
                        .map_err(|e| SdError::runtime(format!("UNet input: {e}")))?;
                }
                let mut noise_pred = unet.predict(&input, t, &cond)?;
                if let Some(uncond) = &uncond {
                    let noise_uncond = unet.predict(&input, t, uncond)?;
                    // uncond + g * (text - uncond), in diffusers' order of operations.
                    noise_pred = &noise_uncond + &((&noise_pred - &noise_uncond) * req.guidance_scale);
                    timings.unet_evaluations += n;
                }
                timings.unet_evaluations += n;
                hooks.event(&Event::Tensor { name: format!("UNet output, step {}", index + 1), stats: TensorStats::of(&noise_pred) });
                latents = scheduler
                    .step(&noise_pred, t, &latents, &mut rngs)
                    .map_err(|e| SdError::runtime(format!("scheduler step {index}: {e}")))?;
                if let Some(blend) = &start.blend {
                    // A regular UNet inpaints by keeping the init latents, noised to the next
                    // step's level, outside the mask (diffusers' 4-channel inpaint path).
                    let kept = match timesteps.get(index + 1) {
                        Some(&next) => scheduler.add_noise(&blend.image_latents, &blend.noise, next),
                        None => blend.image_latents.clone(),
                    };
                    latents = blend_by_mask(&kept, &latents, &blend.mask);
                }
                let done = batch_index * timesteps.len() + index + 1;
                let now = hooks.now();
                hooks.event(&Event::Step { index: done, total, seconds: now - step_start, elapsed: now - loop_start });
                if req.preview_every.is_some_and(|k| done % k == 0 && done < total) {
                    if let Some(image) = crate::preview::latent_preview(&latents) {
                        hooks.event(&Event::Preview { index: done, image });
                    }
                }
            }
            finals.extend(latents.axis_iter(ndarray::Axis(0)).map(|l| l.insert_axis(ndarray::Axis(0)).to_owned()));
        }
        timings.denoising = hooks.now() - loop_start;
    }

    // Latents → pixels, one picture at a time.
    let (vae, seconds) = load_network(hooks, "VAE decoder", || VaeDecoder::load(files, decoder, one_latent, scale))?;
    timings.load_vae = seconds;
    let t = hooks.now();
    let decoder_scaling = dir.decoder_scaling_factor(decoder)?;
    let mut images = Vec::with_capacity(finals.len());
    for latents in finals {
        let decoded = vae.decode(&(latents / decoder_scaling))?;
        hooks.event(&Event::Tensor { name: "decoded image".into(), stats: TensorStats::of(&decoded) });
        images.push(to_rgb8(&decoded)?);
    }
    drop(vae);
    timings.decoding = hooks.now() - t;
    timings.total = hooks.now() - start;
    Ok(images
        .into_iter()
        .zip(seeds)
        .map(|(image, seed)| Generated {
            image,
            seed,
            scheduler: scheduler_name,
            steps: req.steps,
            denoising_steps: timesteps.len(),
            timings: timings.clone(),
            warnings: warnings.clone(),
            model_name: dir.name(),
            model_identity: dir.identity.clone(),
        })
        .collect())
}

/// diffusers' get_timesteps: the index of the first step an init image runs with this strength
/// (`steps - min(int(steps × strength), steps)`, the product in f64 as Python's float).
pub fn strength_start(steps: usize, strength: f32) -> usize {
    let init_timestep = ((steps as f64 * strength as f64) as usize).min(steps);
    steps - init_timestep
}

/// The init image and mask at the output size, as tensors.
struct Conditioning {
    /// [1, 3, H, W] in [-1, 1].
    image: Latents,
    /// The image with the repainted area set to 0 (mid-gray), for the inpainting UNet.
    masked_image: Option<Latents>,
    /// [1, 1, h, w] at the latent size: 1 = repaint, 0 = keep.
    latent_mask: Option<Latents>,
}

impl Conditioning {
    /// `latent`: the latent (height, width).
    fn prepare(init: &InitImage, width: u32, height: u32, latent: (usize, usize), mut warn: impl FnMut(String)) -> Result<Self> {
        let (iw, ih) = (init.image.width, init.image.height);
        let image = if (iw, ih) != (width, height) {
            warn(format!("--init-image is {iw}x{ih}; resized to {width}x{height} (Lanczos, as diffusers/PIL)"));
            resize_lanczos(&init.image, width, height)
        } else {
            init.image.clone()
        };
        let (wu, hu) = (width as usize, height as usize);
        let image_tensor = Latents::from_shape_fn(vec![1, 3, hu, wu], |ix| {
            let v = image.pixels[(ix[2] * wu + ix[3]) * 3 + ix[1]] as f32 / 255.0;
            2.0 * v - 1.0
        });
        let Some(mask) = &init.mask else {
            return Ok(Conditioning { image: image_tensor, masked_image: None, latent_mask: None });
        };
        if (mask.width, mask.height) != (width, height) {
            warn(format!(
                "--mask is {}x{}, the picture {width}x{height}: the mask was resized to {width}x{height} (Lanczos, then white from 128 up)",
                mask.width, mask.height
            ));
        }
        let mask = resize_lanczos(mask, width, height);
        // diffusers' mask processor: grayscale, /255, then 1 from 0.5 up.
        let repaint: Vec<bool> = to_gray(&mask).iter().map(|&v| v as f32 / 255.0 >= 0.5).collect();
        if !repaint.iter().any(|&r| r) {
            warn("--mask has no white (repaint) pixel: the picture is kept as it is, up to the VAE's round trip".to_string());
        }
        let masked = Latents::from_shape_fn(vec![1, 3, hu, wu], |ix| {
            let keep = !repaint[ix[2] * wu + ix[3]];
            image_tensor[[0, ix[1], ix[2], ix[3]]] * if keep { 1.0 } else { 0.0 }
        });
        // torch's nearest interpolation to the latent size: source pixel floor(i × in / out).
        let latent_mask = Latents::from_shape_fn(vec![1, 1, latent.0, latent.1], |ix| {
            let y = ((ix[2] as f64 * (hu as f64 / latent.0 as f64)) as usize).min(hu - 1);
            let x = ((ix[3] as f64 * (wu as f64 / latent.1 as f64)) as usize).min(wu - 1);
            repaint[y * wu + x] as u8 as f32
        });
        Ok(Conditioning { image: image_tensor, masked_image: Some(masked), latent_mask: Some(latent_mask) })
    }
}

/// One generator per picture of a batch: a draw of shape [n, …] takes row i from generator
/// i, as diffusers' randn_tensor does with a list of generators.
struct BatchRng(Vec<TorchRng>);

impl NoiseSource for BatchRng {
    fn randn(&mut self, shape: &[usize]) -> Latents {
        let mut one = shape.to_vec();
        one[0] = 1;
        let rows: Vec<Latents> = self.0.iter_mut().map(|rng| rng.randn(&one)).collect();
        let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
        ndarray::concatenate(ndarray::Axis(0), &views).expect("rows of one shape")
    }
}

/// `t` repeated `n` times along axis 0.
fn repeat_batch(t: &Latents, n: usize) -> Latents {
    let views: Vec<_> = (0..n).map(|_| t.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &views).expect("same shapes")
}

/// (1 - mask) · kept + mask · denoised, mask [n, 1, h, w] broadcast over channels.
fn blend_by_mask(kept: &Latents, denoised: &Latents, mask: &Latents) -> Latents {
    let mut out = denoised.clone();
    for ((ix, o), k) in out.indexed_iter_mut().zip(kept.iter()) {
        let m = mask[[ix[0], 0, ix[2], ix[3]]];
        *o = (1.0 - m) * k + m * *o;
    }
    out
}

/// The latents a VAE encoder output stands for: a latent as it is, or a sample of the
/// distribution (mean + exp(logvar / 2) · randn, logvar clamped to [-30, 20], as diffusers'
/// DiagonalGaussianDistribution), times the VAE's scaling factor.
fn latents_of(encoded: &Encoded, rng: &mut TorchRng, scaling: f32) -> Latents {
    match encoded {
        Encoded::Latent(l) => l * scaling,
        Encoded::Parameters(p) => {
            let c = p.shape()[1] / 2;
            let mean = p.slice_axis(ndarray::Axis(1), ndarray::Slice::from(..c));
            let logvar = p.slice_axis(ndarray::Axis(1), ndarray::Slice::from(c..));
            let noise = rng.randn(mean.shape());
            let mut out = noise;
            ndarray::Zip::from(&mut out).and(&mean).and(&logvar).for_each(|n, &m, &lv| {
                let std = (0.5 * lv.clamp(-30.0, 20.0)).exp();
                *n = m + std * *n;
            });
            out * scaling
        }
    }
}

/// A batch's starting point.
struct BatchStart {
    latents: Latents,
    /// Concatenated to the scaled latents before each UNet call (inpainting UNet: mask and
    /// masked-image latents).
    unet_extra: Option<Latents>,
    /// Regular UNet inpainting: what to keep outside the mask after each step.
    blend: Option<Blend>,
}

struct Blend {
    image_latents: Latents,
    noise: Latents,
    mask: Latents,
}

/// The initial latents of each picture, drawing from its generator in diffusers' order:
/// text-to-image: noise; image-to-image: the encoder sample, then the noise;
/// inpainting: the image's encoder sample (regular UNet, or strength < 1), the noise, then the
/// masked image's encoder sample.
#[allow(clippy::too_many_arguments)]
fn prepare_batch(
    req: &GenerateRequest,
    rngs: &mut BatchRng,
    scheduler: &mut dyn Scheduler,
    timesteps: &[f64],
    one_latent: [usize; 4],
    scaling: f32,
    conditioning: &Option<Conditioning>,
    encoded: &Option<(Encoded, Option<Encoded>)>,
    inpainting_unet: bool,
) -> Result<BatchStart> {
    let stack = |rows: &[Latents]| -> Latents {
        let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
        ndarray::concatenate(ndarray::Axis(0), &views).expect("rows of one shape")
    };
    let n = rngs.0.len();
    let (Some(cond), Some((image, masked))) = (conditioning, encoded) else {
        let rows: Vec<Latents> = match &req.latents {
            Some(l) => vec![l.clone(); n],
            None => rngs.0.iter_mut().map(|rng| rng.randn(&one_latent)).collect(),
        };
        let latents = stack(&rows) * scheduler.init_noise_sigma();
        return Ok(BatchStart { latents, unet_extra: None, blend: None });
    };
    let strength = req.init.as_ref().map_or(1.0, |i| i.strength);
    let t0 = timesteps[0];
    let (mut image_rows, mut noise_rows, mut masked_rows) = (Vec::new(), Vec::new(), Vec::new());
    for rng in rngs.0.iter_mut() {
        let needs_image = masked.is_none() || !inpainting_unet || strength < 1.0;
        if needs_image {
            image_rows.push(latents_of(image, rng, scaling));
        }
        noise_rows.push(rng.randn(&one_latent));
        if let Some(masked) = masked {
            masked_rows.push(latents_of(masked, rng, scaling));
        }
    }
    let noise = stack(&noise_rows);
    let image_latents = (!image_rows.is_empty()).then(|| stack(&image_rows));
    let latents = match (&image_latents, masked.is_some() && strength >= 1.0) {
        // Inpainting at full strength starts from pure noise.
        (_, true) | (None, _) => &noise * scheduler.init_noise_sigma(),
        (Some(image_latents), false) => scheduler.add_noise(image_latents, &noise, t0),
    };
    let Some(mask) = &cond.latent_mask else {
        return Ok(BatchStart { latents, unet_extra: None, blend: None });
    };
    let mask = repeat_batch(mask, n);
    if inpainting_unet {
        let masked_latents = stack(&masked_rows);
        let extra = ndarray::concatenate(ndarray::Axis(1), &[mask.view(), masked_latents.view()])
            .map_err(|e| SdError::runtime(format!("inpainting inputs: {e}")))?;
        return Ok(BatchStart { latents, unet_extra: Some(extra), blend: None });
    }
    let image_latents = image_latents.expect("a regular UNet always encodes the image");
    Ok(BatchStart { latents, unet_extra: None, blend: Some(Blend { image_latents, noise, mask }) })
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
