//! Noise schedulers, numerically matching diffusers 0.42.1.
//!
//! Each scheduler reproduces the diffusers class of the same name, including the float precision
//! diffusers uses: tables are built in float64 (numpy) or float32 (torch) exactly as diffusers builds
//! them, and the step arithmetic is done in f32 in the same order of operations as the torch code.
//! One file per scheduler; the math they share lives once, in files of its own: `config` (from_config
//! semantics), `training` (beta schedules, alphas_cumprod), `spacing` (timestep spacing),
//! `sigmas` (Karras / exponential / Lu sigmas, sigma->timestep inversion), `sigma_schedule` (the
//! k-diffusion family's schedule), `step_index`, `prediction`, `elementwise` kernels, and the
//! `numpy` / `torch` compatible helpers.

use serde_json::Value;

use crate::tensor::{Latents, NoiseSource};

mod config;
mod elementwise;
mod kind;
mod numpy;
mod pipeline_config;
mod prediction;
mod sigma_schedule;
mod sigmas;
mod spacing;
mod step_index;
mod torch;
mod training;

mod ddim;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
mod lcm;
mod lms;
mod pndm;

use config::Config;
pub use kind::SchedulerKind;
pub use pipeline_config::pipeline_scheduler;

pub trait Scheduler {
    /// Which scheduler this is.
    fn kind(&self) -> SchedulerKind;
    /// Command-line name, e.g. "euler-a".
    fn name(&self) -> &'static str {
        self.kind().cli_name()
    }
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), String>;
    /// Exactly diffusers' `scheduler.timesteps` after `set_timesteps` (non-integer for some
    /// Euler/LMS configurations).
    fn timesteps(&self) -> &[f64];
    /// The initial noise's standard deviation; the DDPM-parameterised schedulers (PNDM, DDIM,
    /// LCM, DPM-Solver) start from unit variance.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    /// The UNet's input at `timestep`; the DDPM-parameterised schedulers feed the sample as is.
    fn scale_model_input(&self, sample: &Latents, _timestep: f64) -> Latents {
        sample.clone()
    }
    fn step(
        &mut self,
        model_output: &Latents,
        timestep: f64,
        sample: &Latents,
        noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String>;
    /// diffusers' `add_noise(original, noise, timesteps)` for one timestep (img2img).
    fn add_noise(&self, original: &Latents, noise: &Latents, timestep: f64) -> Latents;
    /// diffusers' `set_begin_index`: img2img pipelines start part-way into the schedule and tell the
    /// scheduler where, so its step index (and `add_noise`) do not depend on timestep look-up.
    /// No-op for schedulers that keep no step index (PNDM, DDIM).
    fn set_begin_index(&mut self, _begin_index: usize) {}
}

#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// DDIM only (diffusers passes `eta` only to schedulers whose `step` accepts it).
    pub eta: f32,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { eta: 0.0 }
    }
}

/// Builds the scheduler `name` (None = the config's `_class_name`) the way
/// `XScheduler.from_config(config)` does: keys the class accepts override its defaults, keys it does
/// not accept are ignored, keys listed in `_use_default_values` take the class default.
/// `config` is the parsed scheduler/scheduler_config.json.
pub fn scheduler_from_config(
    name: Option<&str>,
    config: &Value,
    options: &SchedulerOptions,
) -> Result<Box<dyn Scheduler>, String> {
    let map = config
        .as_object()
        .ok_or_else(|| "scheduler config must be a JSON object".to_string())?;
    let mut cfg = Config::new(map);
    let kind = match name {
        Some(n) => {
            let kind = SchedulerKind::parse(n).ok_or_else(|| {
                format!(
                    "unknown scheduler '{n}'; expected one of: {}",
                    SchedulerKind::cli_names()
                )
            })?;
            for (key, value) in kind.pinned_config() {
                cfg.pin(key, value);
            }
            kind
        }
        None => {
            let class = config_class(map)?;
            SchedulerKind::from_class_name(class).ok_or_else(|| {
                format!(
                    "unsupported scheduler class '{class}' in scheduler config; choose one of: {}",
                    SchedulerKind::cli_names()
                )
            })?
        }
    };
    build(kind, &cfg, options)
}

/// The config's `_class_name`.
fn config_class(map: &serde_json::Map<String, Value>) -> Result<&str, String> {
    match map.get("_class_name") {
        Some(Value::String(c)) => Ok(c.as_str()),
        Some(_) => Err("scheduler config: _class_name must be a string".into()),
        None => Err(format!(
            "scheduler config has no _class_name; choose a scheduler explicitly ({})",
            SchedulerKind::cli_names()
        )),
    }
}

/// `XScheduler.from_config(cfg)` for the class of `kind` (both DPM-Solver kinds are one class;
/// the config says whether its sigmas are Karras').
fn build(
    kind: SchedulerKind,
    cfg: &Config,
    options: &SchedulerOptions,
) -> Result<Box<dyn Scheduler>, String> {
    Ok(match kind {
        SchedulerKind::Pndm => Box::new(pndm::Pndm::from_config(cfg)?),
        SchedulerKind::Ddim => Box::new(ddim::Ddim::from_config(cfg, options.eta)?),
        SchedulerKind::Euler => Box::new(euler::Euler::from_config(cfg)?),
        SchedulerKind::EulerAncestral => {
            Box::new(euler_ancestral::EulerAncestral::from_config(cfg)?)
        }
        SchedulerKind::DpmPp2m | SchedulerKind::DpmPp2mKarras => {
            Box::new(dpm_solver_multistep::DpmSolverMultistep::from_config(cfg)?)
        }
        SchedulerKind::Lms => Box::new(lms::Lms::from_config(cfg)?),
        SchedulerKind::Lcm => Box::new(lcm::Lcm::from_config(cfg)?),
    })
}
