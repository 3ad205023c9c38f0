//! What the pipeline tells its front end while it runs, and what it measures.

use crate::codecs::png::RgbImage;
use crate::error::{Result, SdError};
use crate::tensor::Latents;

/// What the pipeline reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    Loading { network: &'static str },
    Loaded { network: &'static str, seconds: f64 },
    /// Step `index` of `total` done: its seconds, and all steps' so far (network loads not
    /// included, so ETA and seconds per step are the steps').
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

/// One run's hooks with what it has gathered so far: its warnings and timings.
pub struct Run<'h> {
    pub hooks: &'h mut dyn Hooks,
    pub warnings: Vec<String>,
    pub timings: Timings,
}

impl<'h> Run<'h> {
    pub fn new(hooks: &'h mut dyn Hooks) -> Self {
        Run { hooks, warnings: Vec::new(), timings: Timings::default() }
    }
    pub fn now(&self) -> f64 {
        self.hooks.now()
    }
    pub fn event(&mut self, event: Event) {
        self.hooks.event(&event);
    }
    pub fn warn(&mut self, text: String) {
        self.hooks.event(&Event::Warning(text.clone()));
        self.warnings.push(text);
    }
    /// Reports an intermediate tensor (`--verbose`) and stops the run where non-finite values
    /// first appear: a NaN or Inf would otherwise end as a black picture with exit 0. They
    /// come from the model (weights, configs): inputs are checked when they are read.
    pub fn tensor(&mut self, name: impl Into<String>, t: &Latents) -> Result<()> {
        let (name, stats) = (name.into(), TensorStats::of(t));
        self.hooks.event(&Event::Tensor { name: name.clone(), stats });
        if stats.non_finite == 0 {
            return Ok(());
        }
        Err(SdError::model(format!(
            "{name}: {} of {} values are not finite (NaN or Inf); the model's weights or configuration are broken",
            stats.non_finite,
            t.len()
        )))
    }
    /// Loads one network, telling the hooks before and after; returns it with its load time.
    pub fn load<T>(&mut self, network: &'static str, load: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
        load_network(self.hooks, network, load)
    }
}

pub fn load_network<T>(hooks: &mut dyn Hooks, network: &'static str, load: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let start = hooks.now();
    hooks.event(&Event::Loading { network });
    let loaded = load()?;
    let seconds = hooks.now() - start;
    hooks.event(&Event::Loaded { network, seconds });
    Ok((loaded, seconds))
}
