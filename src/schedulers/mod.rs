//! Noise schedulers, numerically matching diffusers 0.42.1.
//!
//! Each scheduler reproduces the diffusers class of the same name, including the float precision
//! diffusers uses: tables are built in float64 (numpy) or float32 (torch) exactly as diffusers builds
//! them, and the step arithmetic is done in f32 in the same order of operations as the torch code.
//! Shared math (beta schedules, alphas_cumprod, timestep spacing, sigma interpolation, Karras /
//! exponential sigmas, sigma->timestep inversion) lives here once; one file per scheduler.

use ndarray::Zip;
use serde_json::{Map, Value};

pub use crate::tensor::{Latents, NoiseSource};

/// The Scheduler methods of the DDPM-parameterised schedulers (PNDM, DDIM, LCM, DPM-Solver): the
/// initial noise has unit variance and the model input is the sample as is. Expands inside an
/// `impl Scheduler` whose type has a `timesteps: Vec<f64>` field.
macro_rules! unit_noise_scheduler_methods {
    () => {
        fn timesteps(&self) -> &[f64] {
            &self.timesteps
        }

        fn init_noise_sigma(&self) -> f32 {
            1.0
        }

        fn scale_model_input(
            &self,
            sample: &$crate::schedulers::Latents,
            _timestep: f64,
        ) -> $crate::schedulers::Latents {
            sample.clone()
        }
    };
}

// Declared after the macro so they can use it.
mod ddim;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
mod lcm;
mod lms;
mod pndm;

pub trait Scheduler {
    /// Command-line name, e.g. "euler-a".
    fn name(&self) -> &'static str;
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), String>;
    /// Exactly diffusers' `scheduler.timesteps` after `set_timesteps` (non-integer for some
    /// Euler/LMS configurations).
    fn timesteps(&self) -> &[f64];
    fn init_noise_sigma(&self) -> f32;
    fn scale_model_input(&self, sample: &Latents, timestep: f64) -> Latents;
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

pub const SCHEDULER_NAMES: &[&str] = &[
    "pndm",
    "ddim",
    "euler",
    "euler-a",
    "dpm++2m",
    "dpm++2m-karras",
    "lms",
    "lcm",
];

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
    let class = match name {
        Some(n) => match n {
            "pndm" => "PNDMScheduler",
            "ddim" => "DDIMScheduler",
            "euler" => "EulerDiscreteScheduler",
            "euler-a" => "EulerAncestralDiscreteScheduler",
            "dpm++2m" | "dpm++2m-karras" => "DPMSolverMultistepScheduler",
            "lms" => "LMSDiscreteScheduler",
            "lcm" => "LCMScheduler",
            _ => {
                return Err(format!(
                    "unknown scheduler '{n}'; expected one of: {}",
                    SCHEDULER_NAMES.join(", ")
                ))
            }
        },
        None => match map.get("_class_name") {
            Some(Value::String(c)) => c.as_str(),
            Some(_) => return Err("scheduler config: _class_name must be a string".into()),
            None => {
                return Err(format!(
                    "scheduler config has no _class_name; choose a scheduler explicitly ({})",
                    SCHEDULER_NAMES.join(", ")
                ))
            }
        },
    };
    let mut cfg = Config::new(map);
    if let Some(n @ ("dpm++2m" | "dpm++2m-karras")) = name {
        // The name itself says DPM-Solver++ 2M (with or without Karras sigmas).
        cfg.pin("algorithm_type", Value::from("dpmsolver++"));
        cfg.pin("solver_order", Value::from(2));
        cfg.pin("use_karras_sigmas", Value::from(n == "dpm++2m-karras"));
    }
    let cfg = &cfg;
    Ok(match class {
        "PNDMScheduler" => Box::new(pndm::Pndm::from_config(cfg)?),
        "DDIMScheduler" => Box::new(ddim::Ddim::from_config(cfg, options.eta)?),
        "EulerDiscreteScheduler" => Box::new(euler::Euler::from_config(cfg)?),
        "EulerAncestralDiscreteScheduler" => {
            Box::new(euler_ancestral::EulerAncestral::from_config(cfg)?)
        }
        "DPMSolverMultistepScheduler" => {
            Box::new(dpm_solver_multistep::DpmSolverMultistep::from_config(cfg)?)
        }
        "LMSDiscreteScheduler" => Box::new(lms::Lms::from_config(cfg)?),
        "LCMScheduler" => Box::new(lcm::Lcm::from_config(cfg)?),
        other => {
            return Err(format!(
                "unsupported scheduler class '{other}' in scheduler config; choose one of: {}",
                SCHEDULER_NAMES.join(", ")
            ))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Config access with from_config semantics.

pub(crate) struct Config<'a> {
    map: &'a Map<String, Value>,
    /// Keys the chosen name forces, overriding the file.
    pinned: Vec<(&'static str, Value)>,
    /// `_use_default_values`: keys diffusers wrote but that were defaults of the saving class.
    use_defaults: Vec<String>,
}

impl<'a> Config<'a> {
    fn new(map: &'a Map<String, Value>) -> Self {
        let use_defaults = match map.get("_use_default_values") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        Config {
            map,
            pinned: Vec::new(),
            use_defaults,
        }
    }

    fn pin(&mut self, key: &'static str, value: Value) {
        self.pinned.push((key, value));
    }

    /// The value for `key`, or None when absent (the class default applies).
    fn get(&self, key: &str) -> Option<&Value> {
        if let Some((_, v)) = self.pinned.iter().find(|(k, _)| *k == key) {
            return Some(v);
        }
        if self.use_defaults.iter().any(|k| k == key) {
            return None;
        }
        self.map.get(key)
    }

    pub(crate) fn f64(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("scheduler config: {key} must be a number, got {v}")),
        }
    }

    /// Optional number (`null` = None, as diffusers' `None` defaults).
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                format!("scheduler config: {key} must be a number or null, got {v}")
            }),
        }
    }

    pub(crate) fn i64(&self, key: &str, default: i64) -> Result<i64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| format!("scheduler config: {key} must be an integer, got {v}")),
        }
    }

    pub(crate) fn usize(&self, key: &str, default: usize) -> Result<usize, String> {
        let v = self.i64(key, default as i64)?;
        usize::try_from(v)
            .map_err(|_| format!("scheduler config: {key} must be non-negative, got {v}"))
    }

    /// Booleans; `null` is falsy as Python's None.
    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!(
                "scheduler config: {key} must be true or false, got {v}"
            )),
        }
    }

    pub(crate) fn string(&self, key: &str, default: &str) -> Result<String, String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(format!("scheduler config: {key} must be a string, got {v}")),
        }
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!(
                "scheduler config: {key} must be a string or null, got {v}"
            )),
        }
    }

    fn opt_f64_list(&self, key: &str) -> Result<Option<Vec<f64>>, String> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| format!("scheduler config: {key} must hold numbers"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(format!(
                "scheduler config: {key} must be an array of numbers or null, got {v}"
            )),
        }
    }

    /// `steps_offset`, bounded so timestep arithmetic cannot overflow.
    pub(crate) fn steps_offset(&self) -> Result<i64, String> {
        let v = self.i64("steps_offset", 0)?;
        if v.abs() > MAX_TRAIN_TIMESTEPS as i64 {
            return Err(format!(
                "scheduler config: steps_offset {v} is out of range"
            ));
        }
        Ok(v)
    }

    /// `thresholding` (DDIM, LCM, DPM-Solver) is not implemented.
    pub(crate) fn reject_thresholding(&self) -> Result<(), String> {
        self.reject_true(
            "thresholding",
            "dynamic thresholding is only for pixel-space models",
        )
    }

    /// Rejects a key that is set to a value this crate does not implement.
    pub(crate) fn reject_true(&self, key: &str, why: &str) -> Result<(), String> {
        if self.bool(key, false)? {
            return Err(format!(
                "scheduler config: {key}=true is not supported ({why})"
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Enumerated options.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prediction {
    Epsilon,
    Velocity,
    Sample,
}

impl Prediction {
    /// Parses `prediction_type`, accepting only the spellings `allowed` by the class.
    pub(crate) fn parse(cfg: &Config, allowed: &[&str], class: &str) -> Result<Self, String> {
        let s = cfg.string("prediction_type", "epsilon")?;
        if !allowed.contains(&s.as_str()) {
            return Err(format!(
                "scheduler config: prediction_type '{s}' is not supported by {class} (expected one of: {})",
                allowed.join(", ")
            ));
        }
        Ok(match s.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::Velocity,
            // EulerDiscreteScheduler also spells it "original_sample".
            _ => Prediction::Sample,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl Spacing {
    pub(crate) fn parse(cfg: &Config, default: &str) -> Result<Self, String> {
        match cfg.string("timestep_spacing", default)?.as_str() {
            "linspace" => Ok(Spacing::Linspace),
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            s => Err(format!(
                "scheduler config: timestep_spacing '{s}' is not supported (expected linspace, leading or trailing)"
            )),
        }
    }
}

/// `final_sigmas_type`: what the sigma after the last step is.
pub(crate) fn parse_final_sigma_is_min(cfg: &Config) -> Result<bool, String> {
    match cfg.string("final_sigmas_type", "zero")?.as_str() {
        "zero" => Ok(false),
        "sigma_min" => Ok(true),
        s => Err(format!("scheduler config: final_sigmas_type '{s}' is not supported (expected zero or sigma_min)")),
    }
}

/// Which sigma spacing replaces the interpolated one (use_karras_sigmas / use_exponential_sigmas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SigmaSpacing {
    #[default]
    Interpolated,
    Karras,
    Exponential,
}

impl SigmaSpacing {
    pub(crate) fn parse(cfg: &Config) -> Result<Self, String> {
        let karras = cfg.bool("use_karras_sigmas", false)?;
        let exponential = cfg.bool("use_exponential_sigmas", false)?;
        let beta = cfg.bool("use_beta_sigmas", false)?;
        if [karras, exponential, beta].iter().filter(|b| **b).count() > 1 {
            return Err("scheduler config: only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used".into());
        }
        if beta {
            return Err("scheduler config: use_beta_sigmas=true is not supported (needs scipy's beta distribution inverse CDF)".into());
        }
        Ok(if karras {
            SigmaSpacing::Karras
        } else if exponential {
            SigmaSpacing::Exponential
        } else {
            SigmaSpacing::Interpolated
        })
    }

    /// The replacement sigmas (float64, descending), or None to keep the interpolated ones.
    pub(crate) fn convert(self, sigma_min: f64, sigma_max: f64, n: usize) -> Option<Vec<f64>> {
        match self {
            SigmaSpacing::Interpolated => None,
            SigmaSpacing::Karras => Some(karras_sigmas(sigma_min, sigma_max, n)),
            SigmaSpacing::Exponential => Some(exponential_sigmas(sigma_min, sigma_max, n)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Training noise schedule.

/// Sanity bound on schedule lengths (SD uses 1000) so absurd configs fail cleanly instead of
/// exhausting memory.
const MAX_TRAIN_TIMESTEPS: usize = 1_000_000;

/// The training schedule every scheduler derives from.
pub(crate) struct TrainSchedule {
    pub num_train_timesteps: usize,
    /// torch float32 `alphas_cumprod`.
    pub alphas_cumprod: Vec<f32>,
    pub rescale_betas_zero_snr: bool,
}

/// Every beta is a variance fraction in [0, 1): outside it (beta_start 5, beta_end -3,
/// trained_betas 2.0) `alphas_cumprod` goes negative or NaN, and diffusers would quietly render
/// a black picture.
fn check_betas(betas: &[f32]) -> Result<(), String> {
    match betas.iter().position(|b| !(0.0..1.0).contains(b)) {
        None => Ok(()),
        Some(i) => Err(format!(
            "scheduler config: beta {i} is {}; betas (beta_start, beta_end, trained_betas) must lie in [0, 1)",
            betas[i]
        )),
    }
}

impl TrainSchedule {
    /// Reads num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas and (when the
    /// class accepts it) rescale_betas_zero_snr, with the class's defaults.
    pub(crate) fn from_config(
        cfg: &Config,
        beta_start: f64,
        beta_end: f64,
        beta_schedule: &str,
        accepts_rescale: bool,
    ) -> Result<Self, String> {
        let n = cfg.usize("num_train_timesteps", 1000)?;
        if n > MAX_TRAIN_TIMESTEPS {
            return Err(format!(
                "scheduler config: num_train_timesteps {n} is larger than supported ({MAX_TRAIN_TIMESTEPS})"
            ));
        }
        if n < 2 {
            return Err(format!(
                "scheduler config: num_train_timesteps must be at least 2, got {n}"
            ));
        }
        let beta_start = cfg.f64("beta_start", beta_start)?;
        let beta_end = cfg.f64("beta_end", beta_end)?;
        let schedule = cfg.string("beta_schedule", beta_schedule)?;
        let betas: Vec<f32> = if let Some(tb) = cfg.opt_f64_list("trained_betas")? {
            if tb.len() != n {
                return Err(format!(
                    "scheduler config: trained_betas has {} values but num_train_timesteps is {n}",
                    tb.len()
                ));
            }
            tb.iter().map(|&b| b as f32).collect()
        } else {
            match schedule.as_str() {
                "linear" => torch_linspace_f32(beta_start, beta_end, n),
                // torch.linspace(start**0.5, end**0.5, n, dtype=float32) ** 2
                "scaled_linear" => torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect(),
                "squaredcos_cap_v2" => betas_for_alpha_bar(n),
                s => {
                    return Err(format!(
                        "scheduler config: beta_schedule '{s}' is not supported (expected linear, scaled_linear or squaredcos_cap_v2)"
                    ))
                }
            }
        };
        check_betas(&betas)?;
        let rescale = accepts_rescale && cfg.bool("rescale_betas_zero_snr", false)?;
        let betas = if rescale {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        };
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        Ok(TrainSchedule {
            num_train_timesteps: n,
            alphas_cumprod: cumprod_f32(&alphas),
            rescale_betas_zero_snr: rescale,
        })
    }

    /// alphas_cumprod[t] for an integer timestep (diffusers indexes with it; negative means the
    /// caller's "final" value applies, so callers check that first).
    pub(crate) fn alpha_at(&self, t: i64) -> Result<f32, String> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i).copied())
            .ok_or_else(|| {
                format!(
                    "timestep {t} is outside the training schedule (0..{})",
                    self.num_train_timesteps
                )
            })
    }

    /// `set_alpha_to_one`: the alpha_cumprod "before" timestep 0 that the last step moves to
    /// (1, or alphas_cumprod[0]).
    pub(crate) fn final_alpha_cumprod(&self, cfg: &Config, default: bool) -> Result<f32, String> {
        Ok(if cfg.bool("set_alpha_to_one", default)? {
            1.0
        } else {
            self.alphas_cumprod[0]
        })
    }

    /// (alphas_cumprod[t], alphas_cumprod[prev_t]) for a step from t to prev_t, with
    /// `final_alpha` for prev_t < 0 (past the end of the schedule).
    pub(crate) fn alphas(
        &self,
        t: i64,
        prev_t: i64,
        final_alpha: f32,
    ) -> Result<(f32, f32), String> {
        let a_t = self.alpha_at(t)?;
        let a_prev = if prev_t >= 0 {
            self.alpha_at(prev_t)?
        } else {
            final_alpha
        };
        Ok((a_t, a_prev))
    }

    /// Euler/DPM set alphas_cumprod[-1] = 2**-24 after zero-terminal-SNR rescaling (so sigma stays finite).
    pub(crate) fn clamp_zero_snr_tail(&mut self) {
        if self.rescale_betas_zero_snr {
            if let Some(last) = self.alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
    }

    /// torch f32 `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, ascending in t.
    pub(crate) fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| sigma_from_alpha_cumprod(a))
            .collect()
    }

    /// The schedule's sigmas in float32 followed by the final sigma (`final_sigmas_type`: the
    /// training schedule's smallest sigma if `final_sigma_min`, else 0).
    pub(crate) fn with_final_sigma(&self, sigmas: &[f64], final_sigma_min: bool) -> Vec<f32> {
        let last = if final_sigma_min {
            sigma_from_alpha_cumprod(self.alphas_cumprod[0])
        } else {
            0.0
        };
        sigmas
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(last))
            .collect()
    }
}

pub(crate) fn sigma_from_alpha_cumprod(a: f32) -> f32 {
    ((1.0 - a) / a).sqrt()
}

/// torch.linspace(start, end, steps, dtype=float32) on CPU: per-element scalar formula from both
/// ends, which torch's AVX2 build compiles to fused multiply-adds.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// torch.cumprod on a float32 CPU tensor accumulates in double.
pub(crate) fn cumprod_f32(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' betas_for_alpha_bar with the default cosine transform (float64, then float32).
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' rescale_zero_terminal_snr (float32 torch ops).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut s: Vec<f32> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let (s0, st) = (s[0], s[s.len() - 1]);
    let scale = s0 / (s0 - st);
    for v in s.iter_mut() {
        *v = (*v - st) * scale;
    }
    let bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// numpy helpers (float64 unless noted).

/// numpy.linspace (float64): i * step + start, the last element set to stop when endpoint.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut y: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num)
                .map(|i| i as f64 / div as f64 * delta + start)
                .collect()
        } else {
            (0..num).map(|i| i as f64 * step + start).collect()
        }
    } else {
        (0..num).map(|i| i as f64 * delta + start).collect()
    };
    if endpoint && num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// numpy.arange with a float step: length ceil((stop-start)/step); elements start, start+step, then
/// start + i*((start+step)-start) (numpy's fill).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// numpy.round / rint (half to even).
pub(crate) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// numpy.interp(x, arange(len(fp)), fp) with float32 fp, computed in float64.
pub(crate) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// np.log on a float32 array: numpy's AVX2/AVX512F SIMD kernel (rational approximation with FMAs,
/// up to ~4 ulp off, not libm's logf). Matters where diffusers inverts sigmas to timesteps.
/// Inputs here are positive normal floats (sigmas); other inputs fall back to f64 ln.
pub(crate) fn numpy_logf(x: f32) -> f32 {
    if !(x.is_normal() && x > 0.0) || x.is_infinite() {
        return (x as f64).ln() as f32;
    }
    // NPY_COEFF_P0..P5_LOGf and NPY_COEFF_Q0..Q5_LOGf as float32 bits.
    const P: [u32; 6] = [
        0x0,
        0x3f80_0000,
        0x4007_361c,
        0x3fbd_70a9,
        0x3ec3_0333,
        0x3cd4_2bcd,
    ];
    const Q: [u32; 6] = [
        0x3f80_0000,
        0x4027_361c,
        0x401c_fe0d,
        0x3f7c_8ae4,
        0x3e1e_5bf3,
        0x3bc0_83df,
    ];
    let (p, q) = (P.map(f32::from_bits), Q.map(f32::from_bits));
    let bits = x.to_bits();
    let mut exponent = ((bits >> 23) as i32 - 126) as f32;
    let mut m = f32::from_bits((bits & 0x7f_ffff) | (126 << 23));
    if m <= std::f32::consts::FRAC_1_SQRT_2 {
        m = m + m;
        exponent -= 1.0;
    }
    let x = m - 1.0;
    let mut num = p[5].mul_add(x, p[4]);
    let mut den = q[5].mul_add(x, q[4]);
    for k in (0..4).rev() {
        num = num.mul_add(x, p[k]);
        den = den.mul_add(x, q[k]);
    }
    exponent.mul_add(std::f32::consts::LN_2, num / den)
}

/// f32 transcendental as torch computes it on a 0-d tensor, rounded from float64 (torch's MKL/SLEEF
/// kernels are within ~1 ulp of this).
pub(crate) fn ln_f32(x: f32) -> f32 {
    (x as f64).ln() as f32
}

pub(crate) fn exp_f32(x: f32) -> f32 {
    (x as f64).exp() as f32
}

// ---------------------------------------------------------------------------------------------
// Sigma schedules.

/// diffusers' _sigma_to_t: piecewise-linear inversion of log(sigma) over the training log-sigmas
/// (float32 `log_sigmas`, float64 arithmetic, with `low - high` in float32 as numpy does).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let mut low = 0usize;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            low = i;
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low], log_sigmas[high]);
    let w = (lo as f64 - log_sigma) / ((lo - hi) as f64);
    let w = w.clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

pub(crate) fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| numpy_logf(s)).collect()
}

/// Karras et al. (2022) sigmas, rho = 7, descending from sigma_max to sigma_min (float64).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n, true)
        .into_iter()
        .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// exp(linspace(log sigma_max, log sigma_min, n)) (float64).
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n, true)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Descending timesteps for the Euler/LMS family (float32 values, as f64):
/// linspace is not rounded; leading/trailing are integers.
pub(crate) fn discrete_timesteps_f32(
    spacing: Spacing,
    n: usize,
    num_train: usize,
    steps_offset: i64,
) -> Vec<f64> {
    spaced_timesteps(spacing, n, num_train, steps_offset, |t| t as f32 as f64)
}

/// Descending integer timesteps as DDIM computes them (linspace rounded half-to-even).
pub(crate) fn integer_timesteps(
    spacing: Spacing,
    n: usize,
    num_train: usize,
    steps_offset: i64,
) -> Vec<f64> {
    spaced_timesteps(spacing, n, num_train, steps_offset, np_round)
}

/// Descending timesteps by `spacing`; the linspace values go through `linspace_cast`.
fn spaced_timesteps(
    spacing: Spacing,
    n: usize,
    num_train: usize,
    steps_offset: i64,
    linspace_cast: fn(f64) -> f64,
) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, n, true)
            .into_iter()
            .rev()
            .map(linspace_cast)
            .collect(),
        Spacing::Leading => {
            let ratio = (num_train / n) as i64;
            (0..n as i64)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = num_train as f64 / n as f64;
            np_arange(num_train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| np_round(t) - 1.0)
                .collect()
        }
    }
}

/// diffusers' index_for_timestep: the first match, or the second when the timestep occurs more than
/// once (so img2img starting mid-schedule does not skip a sigma).
pub(crate) fn index_for_timestep(timesteps: &[f64], t: f64) -> Option<usize> {
    let mut hits = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &v)| v == t)
        .map(|(i, _)| i);
    let first = hits.next()?;
    Some(hits.next().unwrap_or(first))
}

/// Step-index bookkeeping shared by the sigma-based schedulers (diffusers' _step_index/_begin_index).
#[derive(Clone, Debug, Default)]
pub(crate) struct StepIndex {
    pub step_index: Option<usize>,
    pub begin_index: Option<usize>,
}

impl StepIndex {
    pub(crate) fn reset(&mut self) {
        self.step_index = None;
        self.begin_index = None;
    }

    /// The index the next step uses (diffusers' _init_step_index without storing it).
    pub(crate) fn peek(&self, timesteps: &[f64], t: f64) -> Option<usize> {
        self.step_index
            .or(self.begin_index)
            .or_else(|| index_for_timestep(timesteps, t))
    }

    /// Initialises on the first step like diffusers; `not_found` is DPM's fallback index.
    pub(crate) fn init(
        &mut self,
        timesteps: &[f64],
        t: f64,
        not_found: Option<usize>,
    ) -> Result<usize, String> {
        if let Some(i) = self.step_index {
            return Ok(i);
        }
        let i = match self.begin_index {
            Some(b) => b,
            None => index_for_timestep(timesteps, t)
                .or(not_found)
                .ok_or_else(|| format!("timestep {t} is not in the scheduler's timesteps"))?,
        };
        self.step_index = Some(i);
        Ok(i)
    }

    /// The sigma index add_noise uses: look-up unless a begin index was set. `not_found` is DPM's
    /// fallback; elsewhere diffusers would raise, and the closest timestep is used instead.
    pub(crate) fn for_add_noise(
        &self,
        timesteps: &[f64],
        t: f64,
        not_found: Option<usize>,
    ) -> usize {
        match (self.begin_index, self.step_index) {
            (None, _) => index_for_timestep(timesteps, t)
                .or(not_found)
                .unwrap_or_else(|| nearest_index(timesteps, t)),
            (Some(_), Some(s)) => s,
            (Some(b), None) => b,
        }
    }
}

/// Fallback where diffusers would raise but the API cannot fail: the closest timestep.
pub(crate) fn nearest_index(timesteps: &[f64], t: f64) -> usize {
    timesteps
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Integer timestep as DDPM-style schedulers index with it.
pub(crate) fn int_timestep(t: f64) -> Result<i64, String> {
    if t.fract() != 0.0 || !t.is_finite() {
        return Err(format!("timestep {t} is not an integer"));
    }
    Ok(t as i64)
}

pub(crate) fn require_steps(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("num_inference_steps must be at least 1".into());
    }
    if n > MAX_TRAIN_TIMESTEPS {
        return Err(format!(
            "num_inference_steps {n} is larger than supported ({MAX_TRAIN_TIMESTEPS})"
        ));
    }
    Ok(())
}

/// Error for step() before set_timesteps (`class` names the scheduler in the message).
pub(crate) fn require_timesteps_set(num_timesteps: usize, class: &str) -> Result<(), String> {
    if num_timesteps == 0 {
        return Err(format!("{class}: call set_timesteps before step"));
    }
    Ok(())
}

pub(crate) fn check_steps(n: usize, num_train: usize) -> Result<(), String> {
    require_steps(n)?;
    if n > num_train {
        return Err(format!(
            "num_inference_steps ({n}) cannot be larger than num_train_timesteps ({num_train})"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Element-wise f32 kernels (each closure mirrors one torch expression, op by op).

fn shape_err(a: &Latents, b: &Latents) -> String {
    format!("tensor shape mismatch: {:?} vs {:?}", a.shape(), b.shape())
}

pub(crate) fn map2(
    a: &Latents,
    b: &Latents,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Latents, String> {
    if a.shape() != b.shape() {
        return Err(shape_err(a, b));
    }
    Ok(Zip::from(a).and(b).map_collect(|&x, &y| f(x, y)))
}

pub(crate) fn map3(
    a: &Latents,
    b: &Latents,
    c: &Latents,
    f: impl Fn(f32, f32, f32) -> f32,
) -> Result<Latents, String> {
    if a.shape() != b.shape() {
        return Err(shape_err(a, b));
    }
    if a.shape() != c.shape() {
        return Err(shape_err(a, c));
    }
    Ok(Zip::from(a)
        .and(b)
        .and(c)
        .map_collect(|&x, &y, &z| f(x, y, z)))
}

pub(crate) fn map4(
    a: &Latents,
    b: &Latents,
    c: &Latents,
    d: &Latents,
    f: impl Fn(f32, f32, f32, f32) -> f32,
) -> Result<Latents, String> {
    for o in [b, c, d] {
        if a.shape() != o.shape() {
            return Err(shape_err(a, o));
        }
    }
    Ok(Zip::from(a)
        .and(b)
        .and(c)
        .and(d)
        .map_collect(|&w, &x, &y, &z| f(w, x, y, z)))
}

/// torch.clamp(v, lo, hi) = min(max(v, lo), hi), NaN-propagating.
pub(crate) fn torch_clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let y = if v < lo { lo } else { v };
    if y > hi {
        hi
    } else {
        y
    }
}

/// Element-wise f32 map over any number of same-shaped tensors (logical order); `f` gets one value
/// per tensor, in the order given.
pub(crate) fn map_n(arrays: &[&Latents], f: impl Fn(&[f32]) -> f32) -> Result<Latents, String> {
    let first = arrays
        .first()
        .ok_or_else(|| "map_n needs at least one tensor".to_string())?;
    for a in arrays {
        if a.shape() != first.shape() {
            return Err(shape_err(first, a));
        }
    }
    let mut iters: Vec<_> = arrays.iter().map(|a| a.iter()).collect();
    let mut vals = vec![0f32; arrays.len()];
    let mut out = Vec::with_capacity(first.len());
    for _ in 0..first.len() {
        for (v, it) in vals.iter_mut().zip(iters.iter_mut()) {
            *v = *it.next().unwrap_or(&0.0);
        }
        out.push(f(&vals));
    }
    Latents::from_shape_vec(first.raw_dim(), out).map_err(|e| e.to_string())
}

/// Draws noise of `shape`, checking the source honoured it.
pub(crate) fn draw_noise(noise: &mut dyn NoiseSource, shape: &[usize]) -> Result<Latents, String> {
    let n = noise.randn(shape);
    if n.shape() != shape {
        return Err(format!(
            "noise source returned shape {:?}, expected {:?}",
            n.shape(),
            shape
        ));
    }
    Ok(n)
}

/// `clip_sample` / `clip_sample_range` (DDIM, LCM): the x0 clamp range, if clipping.
pub(crate) fn parse_clip_sample(cfg: &Config, default: bool) -> Result<Option<f32>, String> {
    let range = cfg.f64("clip_sample_range", 1.0)? as f32;
    Ok(cfg.bool("clip_sample", default)?.then_some(range))
}

/// x0 predicted from the model output with alpha_cumprod `a_t` (DDIM, LCM), clipped if configured.
pub(crate) fn alpha_pred_original(
    prediction: Prediction,
    a_t: f32,
    model_output: &Latents,
    sample: &Latents,
    clip: Option<f32>,
) -> Result<Latents, String> {
    let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
    let mut x0 = match prediction {
        Prediction::Epsilon => map2(sample, model_output, |s, m| (s - sb * m) / sa)?,
        Prediction::Sample => map2(sample, model_output, |_, m| m)?,
        Prediction::Velocity => map2(sample, model_output, |s, m| sa * s - sb * m)?,
    };
    if let Some(r) = clip {
        x0.mapv_inplace(|v| torch_clamp(v, -r, r));
    }
    Ok(x0)
}

/// DDPM-style add_noise: sqrt(a) * x + sqrt(1 - a) * noise (PNDM, DDIM, LCM).
pub(crate) fn add_noise_alpha(alpha_cumprod: f32, original: &Latents, noise: &Latents) -> Latents {
    let sa = alpha_cumprod.sqrt();
    let sb = (1.0 - alpha_cumprod).sqrt();
    map2(original, noise, |x, n| sa * x + sb * n).unwrap_or_else(|_| original.clone())
}

/// add_noise for DDPM-style schedulers; diffusers would raise on an out-of-range timestep, here
/// it is clamped into the training range since this API cannot fail.
pub(crate) fn add_noise_at_timestep(
    train: &TrainSchedule,
    original: &Latents,
    noise: &Latents,
    t: f64,
) -> Latents {
    let last = train.num_train_timesteps as f64 - 1.0;
    let i = if t.is_nan() {
        0.0
    } else {
        t.round().clamp(0.0, last)
    } as usize;
    add_noise_alpha(train.alphas_cumprod[i], original, noise)
}

// ---------------------------------------------------------------------------------------------
// The sigma-parameterised (k-diffusion style) schedulers: Euler, Euler-a, LMS. They share the
// schedule (SigmaSchedule) and every Scheduler method but the update rule (SigmaStep), which is
// all their files hold besides parsing their options.

/// How a k-diffusion class places its sigmas; options a class does not accept keep the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SigmaOptions {
    /// use_karras_sigmas / use_exponential_sigmas.
    pub sigma_spacing: SigmaSpacing,
    /// interpolation_type "log_linear": n + 1 sigmas log-linear between the table's ends.
    pub log_linear: bool,
    /// sigma_min / sigma_max: the ends of Karras / exponential sigmas (default: the schedule's).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// final_sigmas_type "sigma_min" instead of "zero".
    pub final_sigma_min: bool,
    /// timestep_type "continuous" with v_prediction: timesteps are 0.25 * ln(sigma).
    pub continuous: bool,
}

/// Sigmas, timesteps and step index of a k-diffusion scheduler.
pub(crate) struct SigmaSchedule {
    train: TrainSchedule,
    prediction: Prediction,
    options: SigmaOptions,
    spacing: Spacing,
    steps_offset: i64,
    /// The schedule's sigmas and the final one (n + 1 values).
    pub sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    idx: StepIndex,
}

impl SigmaSchedule {
    /// Reads timestep_spacing (default linspace) and steps_offset, which all three classes accept.
    pub(crate) fn from_config(
        cfg: &Config,
        train: TrainSchedule,
        prediction: Prediction,
        options: SigmaOptions,
    ) -> Result<Self, String> {
        Ok(SigmaSchedule {
            spacing: Spacing::parse(cfg, "linspace")?,
            steps_offset: cfg.steps_offset()?,
            train,
            prediction,
            options,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            idx: StepIndex::default(),
        })
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        require_steps(n)?;
        let o = self.options;
        let num_train = self.train.num_train_timesteps;
        let mut ts = discrete_timesteps_f32(self.spacing, n, num_train, self.steps_offset);
        let table = self.train.sigmas();
        let mut sigmas: Vec<f64> = if o.log_linear {
            // torch.linspace(log(sigma_max), log(sigma_min), n + 1).exp(): note n + 1 sigmas.
            torch_linspace_f32(
                numpy_logf(table[num_train - 1]) as f64,
                numpy_logf(table[0]) as f64,
                n + 1,
            )
            .into_iter()
            .map(|l| exp_f32(l) as f64)
            .collect()
        } else {
            ts.iter().map(|&t| np_interp(t, &table)).collect()
        };
        let smin = o.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
        let smax = o.sigma_max.unwrap_or(sigmas[0]);
        if let Some(s) = o.sigma_spacing.convert(smin, smax, n) {
            let ls = log_sigmas(&table);
            ts = s
                .iter()
                .map(|&sig| sigma_to_t(sig, &ls) as f32 as f64)
                .collect();
            sigmas = s;
        }
        self.sigmas = self.train.with_final_sigma(&sigmas, o.final_sigma_min);
        self.timesteps = if o.continuous {
            let q = 0.25f32;
            self.sigmas[..self.sigmas.len() - 1]
                .iter()
                .map(|&s| (q * ln_f32(s)) as f64)
                .collect()
        } else {
            ts
        };
        self.idx.reset();
        Ok(())
    }

    /// init_noise_sigma: max sigma for linspace/trailing spacing, else sqrt(max^2 + 1); before
    /// set_timesteps diffusers uses the full training sigma table.
    fn init_noise_sigma(&self) -> f32 {
        let table;
        let sigmas = if self.sigmas.is_empty() {
            table = self.train.sigmas();
            &table
        } else {
            &self.sigmas
        };
        let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        match self.spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        }
    }

    /// scale_model_input: sample / sqrt(sigma^2 + 1), at the sigma for `t` (diffusers initialises
    /// the step index in scale_model_input; this API takes &self, so the index is computed, and
    /// step() stores it).
    fn scale_model_input(&self, sample: &Latents, t: f64) -> Latents {
        let i = self
            .idx
            .peek(&self.timesteps, t)
            .unwrap_or_else(|| nearest_index(&self.timesteps, t));
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        let d = (sigma * sigma + 1.0).sqrt();
        sample.mapv(|s| s / d)
    }

    /// add_noise: original + noise * sigma.
    fn add_noise(&self, original: &Latents, noise: &Latents, t: f64) -> Latents {
        let sigma = self
            .sigmas
            .get(self.idx.for_add_noise(&self.timesteps, t, None))
            .copied()
            .unwrap_or(0.0);
        map2(original, noise, |x, n| x + n * sigma).unwrap_or_else(|_| original.clone())
    }

    /// x0 prediction from the model output at noise level sigma.
    pub(crate) fn pred_original(
        &self,
        sigma: f32,
        model_output: &Latents,
        sample: &Latents,
    ) -> Result<Latents, String> {
        match self.prediction {
            Prediction::Epsilon => map2(sample, model_output, |s, m| s - sigma * m),
            Prediction::Velocity => {
                let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
                let c_in = sigma * sigma + 1.0;
                map2(model_output, sample, |m, s| m * c_out + s / c_in)
            }
            Prediction::Sample => {
                if model_output.shape() != sample.shape() {
                    return Err(shape_err(model_output, sample));
                }
                Ok(model_output.clone())
            }
        }
    }

    /// Sigma at `i + 1`, erroring (as diffusers would with an IndexError) past the end.
    pub(crate) fn next_sigma(&self, i: usize) -> Result<f32, String> {
        self.sigmas
            .get(i + 1)
            .copied()
            .ok_or_else(|| "step called more times than there are timesteps".to_string())
    }
}

/// The update rule of one k-diffusion scheduler.
pub(crate) trait SigmaStep {
    /// Command-line name.
    const NAME: &'static str;

    /// Forgets per-schedule state (called by set_timesteps).
    fn reset(&mut self) {}

    /// prev_sample from the model output at step `i` (noise level `sigma = schedule.sigmas[i]`).
    fn step(
        &mut self,
        schedule: &SigmaSchedule,
        i: usize,
        sigma: f32,
        model_output: &Latents,
        sample: &Latents,
        noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String>;
}

/// A k-diffusion scheduler: the shared schedule with one update rule.
pub(crate) struct SigmaScheduler<M> {
    schedule: SigmaSchedule,
    method: M,
}

impl<M: SigmaStep> SigmaScheduler<M> {
    pub(crate) fn new(schedule: SigmaSchedule, method: M) -> Self {
        SigmaScheduler { schedule, method }
    }
}

impl<M: SigmaStep> Scheduler for SigmaScheduler<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        self.schedule.set_timesteps(n)?;
        self.method.reset();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.schedule.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &Latents, timestep: f64) -> Latents {
        self.schedule.scale_model_input(sample, timestep)
    }

    fn step(
        &mut self,
        model_output: &Latents,
        timestep: f64,
        sample: &Latents,
        noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        let s = &mut self.schedule;
        let i = s.idx.init(&s.timesteps, timestep, None)?;
        let sigma = *s
            .sigmas
            .get(i)
            .ok_or("step index past the end of the schedule")?;
        let prev = self
            .method
            .step(&self.schedule, i, sigma, model_output, sample, noise)?;
        self.schedule.idx.step_index = Some(i + 1);
        Ok(prev)
    }

    fn add_noise(&self, original: &Latents, noise: &Latents, timestep: f64) -> Latents {
        self.schedule.add_noise(original, noise, timestep)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.schedule.idx.begin_index = Some(begin_index);
    }
}
