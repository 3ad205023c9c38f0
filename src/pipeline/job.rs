//! Many requests as one staged job (a prompt file's lines, or one request's pictures): each
//! stage runs over every request before the next stage loads its network, so a job loads the
//! text encoder, the UNet and the VAE once each (once per shape: the UNet and the VAE are
//! pinned to their sizes), and still holds one network at a time. Between stages a request
//! keeps only plain data (embeddings, encoder outputs, latents: kilobytes to a few MB).
//!
//! A request's pictures are the ones it gives alone: every stage is the same code for one
//! request as for many, and every picture draws its noise from its own generator. A request
//! that fails leaves the job; the others go on.

use super::events::{Hooks, Run, Timings};
use super::image::{ImageConditioning, Pixels};
use super::plan::Plan;
use super::text::{Embeddings, Tokens};
use super::{decode, denoise, image, plan, preview, text, Generated};
use crate::codecs::png::RgbImage;
use crate::error::{ErrorKind, Result, SdError};
use crate::model_dir::{ModelDir, ModelFiles};
use crate::request::{validate, GenerateRequest};
use crate::tensor::Latents;
use crate::models::lora::Merges;
use std::collections::HashMap;
use std::sync::Arc;

/// What a front end hears from a job, beyond one run's events.
pub trait JobHooks: Hooks {
    /// The events that follow (steps, previews, warnings) belong to request `index`.
    fn request(&mut self, _index: usize) {}
    /// Request `index` is done: its pictures, or why it failed. Called once per request, in
    /// the order the job finishes them (requests are grouped by shape between stages).
    fn finished(&mut self, index: usize, result: Result<Vec<Generated>>);
}

/// Requests run through the stages together. Each keeps its embeddings and picture tensors
/// between stages (~0.5 MB for a 512² text-to-image request, ~10 MB with an init picture):
/// a long prompt file runs in groups of this many, loading each network once per group.
pub const GROUP: usize = 16;

/// Runs every request; each ends in exactly one [`JobHooks::finished`] call.
pub fn generate_job(files: &dyn ModelFiles, requests: &[GenerateRequest], hooks: &mut dyn JobHooks) {
    let mut valid = Vec::new();
    for (index, req) in requests.iter().enumerate() {
        match validate(req) {
            Ok(()) => valid.push((index, req)),
            Err(e) => hooks.finished(index, Err(e)),
        }
    }
    if valid.is_empty() {
        return;
    }
    let opened = ModelDir::open(files).and_then(|dir| text::load_tokenizer(&dir).map(|tokenizer| (dir, tokenizer)));
    let (dir, tokenizer) = match opened {
        Ok(opened) => opened,
        Err(e) => return valid.into_iter().for_each(|(index, _)| hooks.finished(index, Err(e.clone()))),
    };
    let mut job = Job { files, dir: &dir, tokenizer: &tokenizer, checked: HashMap::new(), loras: Vec::new(), hooks };
    for group in valid.chunks(GROUP) {
        job.run_group(group);
    }
}

/// One request on its way through the stages.
struct Pending<'r> {
    index: usize,
    req: &'r GenerateRequest,
    plan: Plan,
    start: f64,
    warnings: Vec<String>,
    timings: Timings,
    tokens: Option<Tokens>,
    /// See [`Generated::padded_conds`].
    padded_conds: bool,
    /// The request's LoRAs, matched against the model: merged as its networks load.
    loras: Arc<Merges>,
    /// Which of the job's sets of LoRAs that is (first seen, first): requests of one set run
    /// in a row.
    lora_set: usize,
    pixels: Option<Pixels>,
    text: Option<Embeddings>,
    image: Option<ImageConditioning>,
    latents: Vec<Latents>,
    /// The decoded pictures: the request is done.
    images: Option<Vec<RgbImage>>,
}

struct Job<'a, 'h> {
    files: &'a dyn ModelFiles,
    dir: &'a ModelDir<'a>,
    tokenizer: &'a crate::tokenizer::ClipTokenizer,
    /// Networks already checked (models::check), with the outcome: each is read once per job.
    checked: HashMap<String, Result<()>>,
    /// Sets of LoRAs already matched against the model.
    loras: Vec<Arc<Merges>>,
    hooks: &'h mut dyn JobHooks,
}

impl Job<'_, '_> {
    fn run_group<'r>(&mut self, group: &[(usize, &'r GenerateRequest)]) {
        let (files, dir) = (self.files, self.dir);
        let mut pending: Vec<Pending<'r>> = group.iter().filter_map(|&(index, req)| self.prepare(index, req)).collect();

        // The UNet's memory (the largest network's) asked for before the first network loads,
        // largest request first: under wazero (Bacalhau) linear memory that grows past its
        // buffer is copied whole, so it should grow once, while nearly empty, not once per
        // network (measured: SD-Turbo's text encoding 22.9 s there, 5.2 s after such a
        // reservation). A request that cannot have it fails now, before any load; a smaller
        // one may still fit.
        let unet_size = |p: &Pending| denoise::largest_unet_latent(&p.plan).iter().product::<usize>();
        pending.sort_by_key(|p| std::cmp::Reverse(unet_size(p)));
        let mut reserved = 0;
        pending = self.stage(pending, |p, run| {
            if unet_size(p) > reserved {
                run.timings.load_unet += denoise::reserve(files, &p.plan, run)?;
                reserved = unet_size(p);
            }
            Ok(())
        });

        // Requests of one text encoder (clip skip, LoRAs merged into it) in a row: it loads once
        // per kind.
        pending.sort_by_key(|p| (p.tokens.as_ref().map_or(1, |t| t.clip_skip), p.lora_set));
        let mut encoder = text::encoder_slot();
        pending = self.stage(pending, |p, run| {
            let tokens = p.tokens.take().expect("tokenized when planned");
            p.text = Some(text::encode(&mut encoder, files, &tokens, &p.loras, run)?);
            Ok(())
        });
        drop(encoder);

        let mut encoder = image::encoder_slot();
        pending = self.stage(pending, |p, run| {
            if let Some(pixels) = p.pixels.take() {
                p.image = Some(image::encode(&mut encoder, files, pixels, &p.plan, run)?);
            }
            Ok(())
        });
        drop(encoder);

        // Requests of one UNet shape (latents and text: a long prompt has more tokens) in a
        // row: the UNet loads once per shape.
        let text_tokens = |p: &Pending| p.text.as_ref().map_or(0, |t| t.cond.shape()[1]);
        pending.sort_by_key(|p| (p.plan.unet_channels, p.plan.one_latent, p.plan.batch_size, text_tokens(p), p.lora_set));
        let mut unet = denoise::unet_slot();
        let mut previews = preview::Previews::new(dir);
        pending = self.stage(pending, |p, run| {
            let text = p.text.as_ref().expect("encoded above");
            let job = denoise::Job { req: p.req, plan: &p.plan, text, image: p.image.as_ref(), loras: &p.loras };
            p.latents = denoise::denoise(&mut unet, files, &mut previews, &job, run)?;
            (p.text, p.image) = (None, None);
            Ok(())
        });
        drop((unet, previews));

        // Each request is finished (its files written) as soon as its pictures are decoded.
        pending.sort_by_key(|p| (p.plan.decoder, p.plan.one_latent));
        let mut decoder = decode::decoder_slot();
        let left = self.stage(pending, |p, run| {
            p.images = Some(decode::decode(&mut decoder, dir, &p.plan, std::mem::take(&mut p.latents), run)?);
            Ok(())
        });
        debug_assert!(left.is_empty(), "every request is finished after decoding");
    }

    /// Stage 1 for one request, before any network loads: the plan, the networks it needs
    /// checked, its picture and mask as tensors, its tokens.
    fn prepare<'r>(&mut self, index: usize, req: &'r GenerateRequest) -> Option<Pending<'r>> {
        self.hooks.request(index);
        let mut run = Run::new(&mut *self.hooks);
        let start = run.now();
        let prepared = (|| {
            let plan = plan::plan(self.dir, req)?;
            for (network, inputs) in networks(&plan, req) {
                let outcome = self
                    .checked
                    .entry(network.clone())
                    .or_insert_with(|| crate::models::check::check_network(self.files, &network, inputs));
                outcome.clone()?;
            }
            let (lora_set, loras) = lora_merges(&mut self.loras, self.files, req)?;
            loras.warnings.iter().for_each(|w| run.warn(w.clone()));
            let pixels = image::prepare(req, &plan, &mut run);
            let clip_skip = text::clip_skip(self.dir, req, &mut run)?;
            let tokens = text::tokenize(self.tokenizer, req, plan.guided, clip_skip, &mut run)?;
            Ok((plan, pixels, tokens, (lora_set, loras)))
        })();
        let (warnings, timings) = (run.warnings, run.timings);
        match prepared {
            Ok((plan, pixels, tokens, (lora_set, loras))) => Some(Pending {
                index,
                req,
                plan,
                start,
                warnings,
                timings,
                padded_conds: tokens.padded,
                loras,
                lora_set,
                tokens: Some(tokens),
                pixels,
                text: None,
                image: None,
                latents: Vec::new(),
                images: None,
            }),
            Err(e) => {
                self.hooks.finished(index, Err(e));
                None
            }
        }
    }

    /// Runs one stage over every pending request; those that fail are finished with their
    /// error and leave the job. A cancel fails every request not yet through the stage.
    fn stage<'r>(
        &mut self,
        pending: Vec<Pending<'r>>,
        mut work: impl FnMut(&mut Pending<'r>, &mut Run) -> Result<()>,
    ) -> Vec<Pending<'r>> {
        let mut kept = Vec::with_capacity(pending.len());
        for mut p in pending {
            self.hooks.request(p.index);
            let outcome = if self.hooks.cancelled() {
                Err(SdError::new(ErrorKind::Cancelled, "cancelled"))
            } else {
                let mut run = Run::new(&mut *self.hooks);
                (run.warnings, run.timings) = (std::mem::take(&mut p.warnings), std::mem::take(&mut p.timings));
                let outcome = work(&mut p, &mut run);
                (p.warnings, p.timings) = (run.warnings, run.timings);
                outcome
            };
            match outcome {
                Ok(()) if p.images.is_some() => {
                    let now = self.hooks.now();
                    let (index, pictures) = finished(self.dir, p, now);
                    self.hooks.finished(index, Ok(pictures));
                }
                Ok(()) => kept.push(p),
                Err(e) => self.hooks.finished(p.index, Err(e)),
            }
        }
        kept
    }
}

/// The request's LoRAs matched against the model, once per set of LoRAs in a job: the set's
/// index among the job's, and its merges.
fn lora_merges(known: &mut Vec<Arc<Merges>>, files: &dyn ModelFiles, req: &GenerateRequest) -> Result<(usize, Arc<Merges>)> {
    let key = crate::models::lora::key(&req.loras);
    if let Some(index) = known.iter().position(|m| m.key == key) {
        return Ok((index, known[index].clone()));
    }
    known.push(Arc::new(crate::models::lora::plan(files, &req.loras)?));
    Ok((known.len() - 1, known[known.len() - 1].clone()))
}

/// Every network a request will load, with the inputs its loader looks for: checked before
/// any of them runs, so a broken decoder fails before the first step (and before a preview).
fn networks(plan: &Plan, req: &GenerateRequest) -> Vec<(String, &'static [&'static [&'static str]])> {
    use crate::model_dir::{TEXT_ENCODER, UNET, VAE_ENCODER};
    use crate::models::check::*;
    let mut networks = vec![
        (TEXT_ENCODER.to_string(), TEXT_ENCODER_INPUTS),
        (UNET.to_string(), if plan.guidance_embedding.is_some() { LCM_UNET_INPUTS } else { UNET_INPUTS }),
        (format!("{}/model.onnx", plan.decoder), VAE_DECODER_INPUTS),
    ];
    if req.init_image.is_some() {
        networks.push((VAE_ENCODER.to_string(), VAE_ENCODER_INPUTS));
    }
    networks
}

/// A request's pictures with what they record about their run. `total` counts from when the
/// job took the request up to now.
fn finished(dir: &ModelDir, p: Pending, now: f64) -> (usize, Vec<Generated>) {
    let images = p.images.unwrap_or_default();
    let mut timings = p.timings;
    timings.total = now - p.start;
    let pictures = images
        .into_iter()
        .zip(&p.plan.seeds)
        .map(|(image, &seed)| Generated {
            image,
            seed,
            scheduler: p.plan.scheduler_name,
            steps: p.req.steps,
            denoising_steps: p.plan.timesteps.len(),
            timings: timings.clone(),
            warnings: p.warnings.clone(),
            model_name: dir.name(),
            model_identity: dir.identity.clone(),
            padded_conds: p.padded_conds,
        })
        .collect();
    (p.index, pictures)
}
