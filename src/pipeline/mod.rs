//! Text-to-image as diffusers' StableDiffusionPipeline does it, and image-to-image and
//! inpainting as its Img2Img and Inpaint pipelines do: small stages over plain data —
//! [`plan`] (sizes, channels, scheduler, resolved once), [`text`] (tokens, embeddings),
//! [`image`] (init picture and mask, VAE encoder), [`denoise`] (batches, guidance, inpaint
//! blend), [`decode`] (VAE decoder) — then the pictures with what they record. Each network
//! stage loads its network, uses it for everything it has to do, and drops it: one network in
//! memory at a time.

pub mod bench;
pub mod decode;
pub mod denoise;
pub mod events;
pub mod image;
pub mod plan;
pub mod preview;
pub mod text;

pub use bench::{bench_unet, UnetBench};
pub use decode::to_rgb8;
pub use events::{Event, Hooks, TensorStats, Timings};
pub use plan::strength_start;

use crate::codecs::png::RgbImage;
use crate::error::{Result, SdError};
use crate::model_dir::{ModelDir, ModelFiles};
use crate::request::{validate, GenerateRequest};
use denoise::{Job, UnetSlot};
pub use events::Run;

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

/// One picture: [`generate_all`] for a request of one image.
pub fn generate(files: &dyn ModelFiles, req: &GenerateRequest, hooks: &mut dyn Hooks) -> Result<Generated> {
    if req.num_images != 1 {
        return Err(SdError::usage("generate() makes one picture; call generate_all for «num_images» > 1"));
    }
    let mut all = generate_all(files, req, hooks)?;
    Ok(all.remove(0))
}

/// `req.num_images` pictures with seeds `seed`, `seed + 1`, …, `req.batch_size` of them
/// through the UNet at a time.
pub fn generate_all(files: &dyn ModelFiles, req: &GenerateRequest, hooks: &mut dyn Hooks) -> Result<Vec<Generated>> {
    validate(req)?;
    let mut run = Run::new(hooks);
    let start = run.now();
    let dir = ModelDir::open(files)?;
    let plan = plan::plan(&dir, req)?;
    check_networks(files, &plan, req)?;
    let pixels = image::prepare(req, &plan, &mut run);
    let tokenizer = text::load_tokenizer(&dir)?;
    let tokens = text::tokenize(&tokenizer, req, plan.guided, &mut run)?;
    let embeddings = text::encode_all(files, std::slice::from_ref(&tokens), &mut run)?.remove(0);
    embeddings.text_shape()?;
    let image = pixels.map(|p| image::encode(files, p, &plan, &mut run)).transpose()?;
    let job = Job { req, plan: &plan, text: &embeddings, image: image.as_ref() };
    // The UNet slot is a temporary: the UNet is dropped before the decoder loads.
    let latents = denoise::denoise(&mut UnetSlot::new(files), &job, &mut run)?;
    let images = decode::decode_all(&dir, &plan, latents, &mut run)?;
    run.timings.total = run.now() - start;
    Ok(pictures(&dir, req, &plan, images, &run))
}

/// Every network the run will load, checked before any of them runs (models::check): a broken
/// decoder fails before the first step, so a failed run has written no preview.
fn check_networks(files: &dyn ModelFiles, plan: &plan::Plan, req: &GenerateRequest) -> Result<()> {
    use crate::model_dir::{TEXT_ENCODER, UNET, VAE_ENCODER};
    use crate::models::check::*;
    check_network(files, TEXT_ENCODER, TEXT_ENCODER_INPUTS)?;
    check_network(files, UNET, UNET_INPUTS)?;
    check_network(files, &format!("{}/model.onnx", plan.decoder), VAE_DECODER_INPUTS)?;
    if req.init_image.is_some() {
        check_network(files, VAE_ENCODER, VAE_ENCODER_INPUTS)?;
    }
    Ok(())
}

/// The finished pictures with what they record about their run.
fn pictures(dir: &ModelDir, req: &GenerateRequest, plan: &plan::Plan, images: Vec<RgbImage>, run: &Run) -> Vec<Generated> {
    images
        .into_iter()
        .zip(&plan.seeds)
        .map(|(image, &seed)| Generated {
            image,
            seed,
            scheduler: plan.scheduler_name,
            steps: req.steps,
            denoising_steps: plan.timesteps.len(),
            timings: run.timings.clone(),
            warnings: run.warnings.clone(),
            model_name: dir.name(),
            model_identity: dir.identity.clone(),
        })
        .collect()
}
