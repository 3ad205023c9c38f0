//! Stage 4: the denoising loop — batches of pictures through one UNet, classifier-free
//! guidance (or an LCM UNet's guidance embedding), and the inpainting blend of a regular
//! UNet. Each picture draws all its noise from its own generator, so it is the same picture
//! whatever the batch (diffusers with one `torch.Generator` per image).

use super::events::{Event, Run};
use super::image::ImageConditioning;
use super::plan::Plan;
use super::preview::Previews;
use super::slot::Slot;
use super::text::Embeddings;
use crate::error::{ErrorKind, Result, SdError};
use crate::model_dir::ModelFiles;
use crate::models::unet::guidance_embedding;
use crate::models::lora::{LoraKey, Merges};
use crate::models::vae::Encoded;
use crate::models::Unet;
use crate::request::GenerateRequest;
use crate::schedulers::Scheduler;
use crate::tensor::{Latents, NoiseSource};
use ndarray::Axis;

/// What one request denoises: its plan, text embeddings and (optional) image conditioning.
pub struct Job<'a> {
    pub req: &'a GenerateRequest,
    pub plan: &'a Plan,
    pub text: &'a Embeddings,
    pub image: Option<&'a ImageConditioning>,
    /// The LoRAs merged into the UNet.
    pub loras: &'a Merges,
}

/// The UNet for a latent batch shape, a text shape and a set of LoRAs merged into it: a last,
/// smaller batch needs it pinned to its size, other LoRAs need other weights.
pub type UnetSlot = Slot<([usize; 4], [usize; 3], LoraKey), Unet>;

pub fn unet_slot() -> UnetSlot {
    Slot::new("UNet")
}

/// The UNet's latent input for a batch of `n` pictures.
fn unet_latent(plan: &Plan, n: usize) -> [usize; 4] {
    let [_, _, h, w] = plan.one_latent;
    [n, plan.unet_channels, h, w]
}

/// Asks for the memory of the request's largest UNet run (its first batch), without loading
/// the UNet (see [`Unet::reserve`]); the time it took.
pub fn reserve(files: &dyn ModelFiles, plan: &Plan, run: &mut Run) -> Result<f64> {
    let start = run.now();
    Unet::reserve(files, largest_unet_latent(plan))?;
    Ok(run.now() - start)
}

/// The request's largest UNet input: its first batch.
pub fn largest_unet_latent(plan: &Plan) -> [usize; 4] {
    unet_latent(plan, plan.batch_size.min(plan.seeds.len()))
}

/// Denoises every picture of the job, batch by batch; returns each picture's final latents.
pub fn denoise(
    slot: &mut UnetSlot,
    files: &dyn ModelFiles,
    previews: &mut Previews,
    job: &Job,
    run: &mut Run,
) -> Result<Vec<Latents>> {
    let plan = job.plan;
    let [tokens, dim] = job.text.text_shape()?;
    let batches: Vec<&[u64]> = plan.seeds.chunks(plan.batch_size).collect();
    let total = plan.timesteps.len() * batches.len();
    let mut progress = Progress { done: 0, total, start: run.now(), loads_at_start: loads(run), previews };
    let mut finals = Vec::with_capacity(plan.seeds.len());
    for batch in batches {
        let n = batch.len();
        let key = (unet_latent(plan, n), [n, tokens, dim], job.loras.key.clone());
        let (unet, seconds) = slot.get(key, run, |(latent, text, _)| {
            Unet::load(files, *latent, *text, plan.guidance_embedding, &job.loras.unet)
        })?;
        run.timings.load_unet += seconds;
        let latents = denoise_batch(unet, job, batch, run, &mut progress)?;
        finals.extend(latents.axis_iter(Axis(0)).map(|l| l.insert_axis(Axis(0)).to_owned()));
    }
    run.timings.denoising += progress.elapsed(run);
    Ok(finals)
}

/// Seconds spent loading networks so far (the UNet's, a preview decoder's).
fn loads(run: &Run) -> f64 {
    run.timings.load_unet + run.timings.load_vae
}

/// Steps done over all batches, for progress events and previews.
struct Progress<'p, 'd> {
    done: usize,
    total: usize,
    start: f64,
    loads_at_start: f64,
    previews: &'p mut Previews<'d>,
}

impl Progress<'_, '_> {
    /// Seconds spent on steps so far: loads during the stage are timed as loads, so seconds per
    /// step (and the page's ETA) mean the steps, also in a 1-step run whose load is most of it.
    fn elapsed(&self, run: &Run) -> f64 {
        run.now() - self.start - (loads(run) - self.loads_at_start)
    }
}

fn denoise_batch(unet: &Unet, job: &Job, seeds: &[u64], run: &mut Run, progress: &mut Progress) -> Result<Latents> {
    let (req, plan) = (job.req, job.plan);
    let n = seeds.len();
    let (mut scheduler, timesteps) = plan.scheduler(req)?;
    let mut rngs = BatchRng(seeds.iter().map(|&s| req.rng.generator(s)).collect());
    let start = start_batch(job, &mut rngs, scheduler.as_mut(), &timesteps)?;
    let mut latents = start.latents;
    run.tensor("initial latents", &latents)?;
    let cond = repeat_batch(&job.text.cond, n);
    let uncond = job.text.uncond.as_ref().map(|u| repeat_batch(u, n));
    let guidance = Guidance {
        scale: req.guidance_scale,
        embedding: plan.guidance_embedding.map(|dim| guidance_embedding(req.guidance_scale, dim, n)),
    };
    for (index, &t) in timesteps.iter().enumerate() {
        if run.hooks.cancelled() {
            return Err(SdError::new(ErrorKind::Cancelled, "cancelled"));
        }
        let step_start = run.now();
        let mut input = scheduler.scale_model_input(&latents, t);
        if let Some(extra) = &start.unet_extra {
            input = ndarray::concatenate(Axis(1), &[input.view(), extra.view()])
                .map_err(|e| SdError::runtime(format!("UNet input: {e}")))?;
        }
        let noise_pred = guided_prediction(unet, &input, t, &cond, uncond.as_ref(), &guidance, run)?;
        run.tensor(format!("UNet output, step {}", index + 1), &noise_pred)?;
        latents = scheduler
            .step(&noise_pred, t, &latents, &mut rngs)
            .map_err(|e| SdError::runtime(format!("scheduler step {index}: {e}")))?;
        if let Some(blend) = &start.blend {
            latents = blend.apply(scheduler.as_ref(), timesteps.get(index + 1).copied(), &latents);
        }
        run.tensor(format!("latents after step {}", index + 1), &latents)?;
        step_done(job, progress, step_start, &latents, run);
    }
    Ok(latents)
}

/// How guidance enters: the scale for classifier-free guidance, and an LCM UNet's embedding
/// of it ([batch, time_cond_proj_dim]).
struct Guidance {
    scale: f32,
    embedding: Option<Latents>,
}

/// The UNet's prediction, with classifier-free guidance when there is an unconditional pass:
/// uncond + g · (text − uncond), in diffusers' order of operations.
fn guided_prediction(
    unet: &Unet,
    input: &Latents,
    t: f64,
    cond: &Latents,
    uncond: Option<&Latents>,
    guidance: &Guidance,
    run: &mut Run,
) -> Result<Latents> {
    let n = input.shape()[0];
    let embedding = guidance.embedding.as_ref();
    let noise_pred = unet.predict(input, t, cond, embedding)?;
    run.timings.unet_evaluations += n;
    let Some(uncond) = uncond else { return Ok(noise_pred) };
    let noise_uncond = unet.predict(input, t, uncond, embedding)?;
    run.timings.unet_evaluations += n;
    Ok(&noise_uncond + &((&noise_pred - &noise_uncond) * guidance.scale))
}

fn step_done(job: &Job, progress: &mut Progress, step_start: f64, latents: &Latents, run: &mut Run) {
    progress.done += 1;
    let (done, total) = (progress.done, progress.total);
    let (seconds, elapsed) = (run.now() - step_start, progress.elapsed(run));
    run.event(Event::Step { index: done, total, seconds, elapsed });
    if job.req.preview_every.is_some_and(|k| done % k == 0 && done < total) {
        if let Some(image) = progress.previews.picture(latents, job.plan, run) {
            run.event(Event::Preview { index: done, image });
        }
    }
}

/// One generator per picture of a batch: a draw of shape [n, …] takes row i from generator
/// i, as diffusers' randn_tensor does with a list of generators.
struct BatchRng(Vec<Box<dyn NoiseSource + Send>>);

impl NoiseSource for BatchRng {
    fn randn(&mut self, shape: &[usize]) -> Latents {
        let mut one = shape.to_vec();
        one[0] = 1;
        let rows: Vec<Latents> = self.0.iter_mut().map(|rng| rng.randn(&one)).collect();
        stack(&rows)
    }
}

/// Rows of one shape, stacked along axis 0.
fn stack(rows: &[Latents]) -> Latents {
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    ndarray::concatenate(Axis(0), &views).expect("rows of one shape")
}

/// `t` repeated `n` times along axis 0.
fn repeat_batch(t: &Latents, n: usize) -> Latents {
    ndarray::concatenate(Axis(0), &vec![t.view(); n]).expect("same shapes")
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

/// A regular UNet inpaints by keeping the init latents, noised to the next step's level,
/// outside the mask (diffusers' 4-channel inpaint path).
struct Blend {
    image_latents: Latents,
    noise: Latents,
    mask: Latents,
}

impl Blend {
    fn apply(&self, scheduler: &dyn Scheduler, next: Option<f64>, denoised: &Latents) -> Latents {
        let kept = match next {
            Some(next) => scheduler.add_noise(&self.image_latents, &self.noise, next),
            None => self.image_latents.clone(),
        };
        // (1 - mask) · kept + mask · denoised, mask [n, 1, h, w] broadcast over channels.
        let mut out = denoised.clone();
        for ((ix, o), k) in out.indexed_iter_mut().zip(kept.iter()) {
            let m = self.mask[[ix[0], 0, ix[2], ix[3]]];
            *o = (1.0 - m) * k + m * *o;
        }
        out
    }
}

/// The initial latents of each picture, drawing from its generator in diffusers' order:
/// text-to-image: noise; image-to-image: the encoder sample, then the noise;
/// inpainting: the image's encoder sample (regular UNet, or strength < 1), the noise, then the
/// masked image's encoder sample.
fn start_batch(job: &Job, rngs: &mut BatchRng, scheduler: &mut dyn Scheduler, timesteps: &[f64]) -> Result<BatchStart> {
    let (req, plan) = (job.req, job.plan);
    let n = rngs.0.len();
    let Some(image) = job.image else {
        let rows: Vec<Latents> = match &req.latents {
            Some(l) => vec![l.clone(); n],
            None => rngs.0.iter_mut().map(|rng| rng.randn(&plan.one_latent)).collect(),
        };
        let latents = stack(&rows) * scheduler.init_noise_sigma();
        return Ok(BatchStart { latents, unet_extra: None, blend: None });
    };
    let full_strength = req.strength_or_default() >= 1.0;
    let needs_image = image.masked_image.is_none() || !plan.inpainting_unet || !full_strength;
    let (mut image_rows, mut noise_rows, mut masked_rows) = (Vec::new(), Vec::new(), Vec::new());
    for rng in rngs.0.iter_mut() {
        if needs_image {
            image_rows.push(latents_of(&image.image, rng.as_mut(), plan.vae_scaling));
        }
        noise_rows.push(rng.randn(&plan.one_latent));
        if let Some(masked) = &image.masked_image {
            masked_rows.push(latents_of(masked, rng.as_mut(), plan.vae_scaling));
        }
    }
    let noise = stack(&noise_rows);
    let image_latents = (!image_rows.is_empty()).then(|| stack(&image_rows));
    let latents = match (&image_latents, image.masked_image.is_some() && full_strength) {
        // Inpainting at full strength starts from pure noise.
        (_, true) | (None, _) => &noise * scheduler.init_noise_sigma(),
        (Some(image_latents), false) => scheduler.add_noise(image_latents, &noise, timesteps[0]),
    };
    let Some(mask) = &image.pixels.latent_mask else {
        return Ok(BatchStart { latents, unet_extra: None, blend: None });
    };
    let mask = repeat_batch(mask, n);
    if plan.inpainting_unet {
        let masked_latents = stack(&masked_rows);
        let extra = ndarray::concatenate(Axis(1), &[mask.view(), masked_latents.view()])
            .map_err(|e| SdError::runtime(format!("inpainting inputs: {e}")))?;
        return Ok(BatchStart { latents, unet_extra: Some(extra), blend: None });
    }
    let image_latents = image_latents.expect("a regular UNet always encodes the image");
    Ok(BatchStart { latents, unet_extra: None, blend: Some(Blend { image_latents, noise, mask }) })
}

/// The latents a VAE encoder output stands for: a latent as it is, or a sample of the
/// distribution (mean + exp(logvar / 2) · randn, logvar clamped to [-30, 20], as diffusers'
/// DiagonalGaussianDistribution), times the VAE's scaling factor.
fn latents_of(encoded: &Encoded, rng: &mut dyn NoiseSource, scaling: f32) -> Latents {
    match encoded {
        Encoded::Latent(l) => l * scaling,
        Encoded::Parameters(p) => {
            let c = p.shape()[1] / 2;
            let mean = p.slice_axis(Axis(1), ndarray::Slice::from(..c));
            let logvar = p.slice_axis(Axis(1), ndarray::Slice::from(c..));
            let mut out = rng.randn(mean.shape());
            ndarray::Zip::from(&mut out).and(&mean).and(&logvar).for_each(|n, &m, &lv| {
                let std = crate::math::expf(0.5 * lv.clamp(-30.0, 20.0));
                *n = m + std * *n;
            });
            out * scaling
        }
    }
}
