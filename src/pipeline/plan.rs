//! Stage 1, before any network loads: what the request means for this model dir — sizes,
//! channels, the decoder, the scheduler and its timesteps — resolved once, so a wrong size or
//! config fails before seconds of loading.

use crate::error::{Result, SdError};
use crate::model_dir::{ModelDir, ModelFiles};
use crate::request::GenerateRequest;
use crate::schedulers::{pipeline_scheduler, Scheduler, SchedulerKind, SchedulerOptions};

/// Everything later stages need to know about the run, as plain data.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The model dir, for messages.
    pub model: String,
    pub width: u32,
    pub height: u32,
    /// The VAE's pixels per latent.
    pub scale: u32,
    /// One picture's latent shape [1, C, h, w].
    pub one_latent: [usize; 4],
    /// The UNet's input channels: C, or 2C + 1 for an inpainting UNet.
    pub unet_channels: usize,
    pub inpainting_unet: bool,
    /// The decoder's folder in the model dir.
    pub decoder: &'static str,
    /// The model's scheduler config with the request's overrides written in.
    pub scheduler_config: serde_json::Value,
    /// The scheduler's command-line name.
    pub scheduler_name: &'static str,
    /// The timesteps that run (cut by an init image's strength).
    pub timesteps: Vec<f64>,
    /// Index of the first step of the full schedule that runs (0 without an init image).
    pub t_start: usize,
    /// Classifier-free guidance runs an unconditional pass too.
    pub guided: bool,
    /// An LCM UNet's guidance-embedding width (`time_cond_proj_dim`): guidance goes in as an
    /// embedding, and there is no unconditional pass.
    pub guidance_embedding: Option<usize>,
    /// One seed per picture.
    pub seeds: Vec<u64>,
    pub batch_size: usize,
    /// The VAE encoder's latents are multiplied by this.
    pub vae_scaling: f32,
}

pub fn plan(dir: &ModelDir, req: &GenerateRequest) -> Result<Plan> {
    let files = dir.files;
    let scale = dir.vae_scale_factor()?.ok_or_else(|| {
        SdError::model(format!(
            "{}: vae_decoder/config.json (block_out_channels) is missing, so the VAE scale factor is unknown",
            files.describe()
        ))
    })?;
    let (width, height) = output_size(dir, req, scale)?;
    let decoder = decoder_dir(files, req)?;
    let latent_channels = dir.vae_config_usize("latent_channels", 4);
    let (unet_channels, inpainting_unet) = unet_channels(dir, req, latent_channels)?;
    let one_latent = [1, latent_channels, (height / scale) as usize, (width / scale) as usize];
    let mut scheduler_config = dir.scheduler_config.clone();
    write_overrides(&mut scheduler_config, req);
    let t_start = req.init_image.as_ref().map_or(0, |_| strength_start(req.steps, req.strength_or_default()));
    let guidance_embedding = dir.unet_guidance_embedding_dim();
    let mut plan = Plan {
        model: files.describe(),
        width,
        height,
        scale,
        one_latent,
        unet_channels,
        inpainting_unet,
        decoder,
        scheduler_config,
        scheduler_name: "",
        timesteps: Vec::new(),
        t_start,
        // As diffusers' pipelines: a UNet with a guidance embedding never runs the CFG pass.
        guided: req.guidance_scale > 1.0 && guidance_embedding.is_none(),
        guidance_embedding,
        seeds: (0..req.num_images as u64).map(|i| req.seed.wrapping_add(i)).collect(),
        batch_size: req.batch_size.clamp(1, req.num_images),
        vae_scaling: dir.vae_scaling_factor()?,
    };
    let (probe, timesteps) = plan.scheduler(req)?;
    plan.scheduler_name = probe.name();
    plan.timesteps = timesteps;
    if let Some(dim) = guidance_embedding {
        if probe.kind() != SchedulerKind::Lcm {
            return Err(not_lcm_scheduler(&plan, req, dim, probe.name()));
        }
    }
    // diffusers' inpaint pipeline refuses this (its img2img would run PNDM's extra step alone).
    if plan.timesteps.is_empty() || (req.init_image.is_some() && t_start == req.steps) {
        let strength = req.init_image.as_ref().map_or(1.0, |_| req.strength_or_default());
        return Err(SdError::usage(format!(
            "«strength» {strength} with {} steps runs no step (diffusers runs int(steps × strength)); raise «strength» or «steps»",
            req.steps
        )));
    }
    if let Some(latents) = &req.latents {
        if latents.shape() != one_latent {
            return Err(SdError::usage(format!(
                "«latents» has shape {:?}, but {width}x{height} with this model needs {:?}",
                latents.shape(),
                one_latent
            )));
        }
    }
    Ok(plan)
}

impl Plan {
    /// A fresh scheduler (multistep schedulers keep state, so each batch gets its own) and the
    /// timesteps it runs: an init image cuts the schedule as diffusers' get_timesteps does.
    pub fn scheduler(&self, req: &GenerateRequest) -> Result<(Box<dyn Scheduler>, Vec<f64>)> {
        let name = req.scheduler.map(|kind| kind.cli_name());
        let mut scheduler = pipeline_scheduler(name, &self.scheduler_config, &SchedulerOptions { eta: req.eta })
                .map_err(|e| SdError::model(format!("{}/scheduler/scheduler_config.json: {e}", self.model)))?;
        scheduler.set_timesteps(req.steps).map_err(SdError::usage)?;
        let mut timesteps = scheduler.timesteps().to_vec();
        if req.init_image.is_some() {
            // Every scheduler here has diffusers' `order` 1.
            timesteps.drain(..self.t_start.min(timesteps.len()));
            scheduler.set_begin_index(self.t_start);
        }
        Ok((scheduler, timesteps))
    }

    /// The latent (h, w).
    pub fn latent_size(&self) -> (usize, usize) {
        (self.one_latent[2], self.one_latent[3])
    }
}

/// An LCM UNet with another scheduler: a bad flag, or a model dir that contradicts itself.
fn not_lcm_scheduler(plan: &Plan, req: &GenerateRequest, dim: usize, scheduler: &str) -> SdError {
    let unet = format!("this model's UNet is an LCM UNet (unet/config.json: time_cond_proj_dim {dim})");
    if req.scheduler.is_some() {
        return SdError::usage(format!(
            "{unet}, made for the LCM scheduler; «scheduler» {scheduler} does not fit it: pass «scheduler» lcm"
        ));
    }
    let declared = plan.scheduler_config.get("_class_name").and_then(|c| c.as_str()).unwrap_or("no _class_name");
    SdError::model(format!(
        "{unet}, but {}/scheduler/scheduler_config.json declares {declared}: pass «scheduler» lcm (or give the model dir LCMScheduler's config)",
        plan.model
    ))
}

/// diffusers' get_timesteps: the index of the first step an init image runs with this strength
/// (`steps - min(int(steps × strength), steps)`, the product in f64 as Python's float).
pub fn strength_start(steps: usize, strength: f32) -> usize {
    let init_timestep = ((steps as f64 * strength as f64) as usize).min(steps);
    steps - init_timestep
}

/// The picture's size: as given, else the init picture's (rounded down to what the UNet
/// takes), else the UNet's sample size.
fn output_size(dir: &ModelDir, req: &GenerateRequest, scale: u32) -> Result<(u32, u32)> {
    let step = scale.max(8);
    // In u64 and saturating: a config may say anything.
    let default_side = dir.unet_sample_size().map(|s| (s, s.saturating_mul(scale as u64)));
    let side = |given: Option<u32>, image: Option<u32>, key: &str| -> Result<u32> {
        let side = match (given, image) {
            (Some(s), _) => s,
            (None, Some(i)) if i - i % step == 0 => {
                return Err(SdError::usage(format!("«init_image» is {i} pixels on a side; it needs at least {step}")))
            }
            (None, Some(i)) if i > crate::request::MAX_SIDE => {
                return Err(SdError::usage(format!(
                    "«init_image» is {i} pixels on a side, more than the {} a picture can have: pass «width» and «height» (the picture is resized to them)",
                    crate::request::MAX_SIDE
                )))
            }
            (None, Some(i)) => i - i % step,
            (None, None) => match default_side {
                None => return Err(SdError::usage(format!("unet/config.json has no sample_size; pass «{key}»"))),
                Some((sample_size, side)) if side > crate::request::MAX_SIDE as u64 => {
                    return Err(SdError::usage(format!(
                        "unet/config.json's sample_size {sample_size} makes the default picture {side} pixels on a side, more than the {}: pass «width» and «height»",
                        crate::request::MAX_SIDE
                    )))
                }
                Some((_, side)) => side as u32,
            },
        };
        if side % scale != 0 {
            return Err(SdError::usage(format!("«{key}» {side} is not a multiple of the VAE scale factor {scale}")));
        }
        Ok(side)
    };
    let init = req.init_image.as_ref();
    Ok((side(req.width, init.map(|i| i.width), "width")?, side(req.height, init.map(|i| i.height), "height")?))
}

fn decoder_dir(files: &dyn ModelFiles, req: &GenerateRequest) -> Result<&'static str> {
    let decoder = req.vae.dir();
    if !files.exists(&format!("{decoder}/model.onnx")) {
        return Err(SdError::model(format!(
            "{}/{decoder}/model.onnx is missing: «vae» {} needs it (scripts/convert.py --taesd adds TAESD)",
            files.describe(),
            req.vae.name()
        )));
    }
    Ok(decoder)
}

/// The UNet's input channels, and whether it is an inpainting UNet (which needs a mask).
fn unet_channels(dir: &ModelDir, req: &GenerateRequest, latent_channels: usize) -> Result<(usize, bool)> {
    let unet_channels = dir.unet_config_usize("in_channels", latent_channels);
    let inpainting_unet = unet_channels == 2 * latent_channels + 1;
    if unet_channels != latent_channels && !inpainting_unet {
        return Err(SdError::model(format!(
            "{}/unet/config.json: in_channels {unet_channels}; expected {latent_channels} (a regular UNet) or {} (an inpainting UNet)",
            dir.files.describe(),
            2 * latent_channels + 1
        )));
    }
    if inpainting_unet && (req.init_image.is_none() || req.mask.is_none()) {
        return Err(SdError::usage(format!(
            "this model's UNet is an inpainting UNet ({unet_channels} input channels): give «init_image» and «mask»"
        )));
    }
    Ok((unet_channels, inpainting_unet))
}

/// Writes the request's scheduler keys (the seed system's beta flags) into the config, and
/// takes them out of `_use_default_values` (which would otherwise make from_config ignore them).
fn write_overrides(config: &mut serde_json::Value, req: &GenerateRequest) {
    let Some(map) = config.as_object_mut() else { return };
    for (key, value) in req.scheduler_overrides() {
        map.insert(key.to_string(), value);
        if let Some(serde_json::Value::Array(defaults)) = map.get_mut("_use_default_values") {
            defaults.retain(|d| d.as_str() != Some(key));
        }
    }
}
