//! Text-to-image as diffusers' StableDiffusionPipeline does it, and image-to-image and
//! inpainting as its Img2Img and Inpaint pipelines do: small stages over plain data —
//! [`plan`] (sizes, channels, scheduler, resolved once), [`text`] (tokens, embeddings),
//! [`image`] (init picture and mask, VAE encoder), [`denoise`] (batches, guidance, inpaint
//! blend), [`decode`] (VAE decoder) — then the pictures with what they record. [`job`] runs
//! them over many requests: each network stage loads its network, uses it for every request,
//! and drops it: one network in memory at a time, each loaded once per job.

pub mod bench;
pub mod decode;
pub mod denoise;
pub mod events;
pub mod image;
pub mod job;
pub mod plan;
pub mod preview;
pub mod slot;
pub mod text;

pub use bench::{bench_network, BenchNetwork, NetworkBench};
pub use decode::to_rgb8;
pub use events::{Event, Hooks, TensorStats, Timings};
pub use plan::strength_start;

pub use events::Run;
pub use job::{generate_job, JobHooks};

use crate::codecs::png::RgbImage;
use crate::error::{Result, SdError};
use crate::model_dir::ModelFiles;
use crate::request::GenerateRequest;

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
    /// The prompt and the negative prompt took different numbers of 75-token chunks and the
    /// shorter was padded with empty ones (Automatic1111 records that as "Pad conds: True").
    pub padded_conds: bool,
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
/// through the UNet at a time: a job of one request.
pub fn generate_all(files: &dyn ModelFiles, req: &GenerateRequest, hooks: &mut dyn Hooks) -> Result<Vec<Generated>> {
    let mut one = OneRequest { hooks, result: None };
    generate_job(files, std::slice::from_ref(req), &mut one);
    one.result.expect("a job finishes every request")
}

/// A single request's hooks, keeping its result.
struct OneRequest<'h> {
    hooks: &'h mut dyn Hooks,
    result: Option<Result<Vec<Generated>>>,
}

impl Hooks for OneRequest<'_> {
    fn event(&mut self, event: &Event) {
        self.hooks.event(event)
    }
    fn cancelled(&self) -> bool {
        self.hooks.cancelled()
    }
    fn now(&self) -> f64 {
        self.hooks.now()
    }
}

impl JobHooks for OneRequest<'_> {
    fn finished(&mut self, _index: usize, result: Result<Vec<Generated>>) {
        self.result = Some(result);
    }
}
