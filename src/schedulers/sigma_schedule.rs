//! The sigma-parameterised (k-diffusion style) schedulers: Euler, Euler-a, LMS. They share the
//! schedule (SigmaSchedule) and every Scheduler method but the update rule (SigmaStep), which is
//! all their files hold besides parsing their options.

use super::config::Config;
use super::elementwise::{map2, shape_err};
use super::kind::SchedulerKind;
use super::numpy::{np_interp, numpy_logf};
use super::prediction::Prediction;
use super::sigmas::{log_sigmas, sigma_to_t, SigmaSpacing};
use super::spacing::{require_steps, Spacing};
use super::step_index::{nearest_index, StepIndex};
use super::torch::{exp_f32, ln_f32, torch_linspace_f32};
use super::training::TrainSchedule;
use super::Scheduler;
use crate::tensor::{Latents, NoiseSource};

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
        let mut ts = self
            .spacing
            .float_timesteps(n, num_train, self.steps_offset);
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
    /// Which scheduler this rule makes.
    const KIND: SchedulerKind;

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
    fn kind(&self) -> SchedulerKind {
        M::KIND
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
