//! EulerDiscreteScheduler (k-diffusion Euler; s_churn = 0 as the pipelines call it, so no noise).

use super::config::Config;
use super::elementwise::map2;
use super::kind::SchedulerKind;
use super::prediction::Prediction;
use super::sigma_schedule::{SigmaOptions, SigmaSchedule, SigmaScheduler, SigmaStep};
use super::sigmas::{parse_final_sigma_is_min, SigmaSpacing};
use super::training::TrainSchedule;
use crate::tensor::{Latents, NoiseSource};

pub(crate) struct Euler;

impl Euler {
    pub(crate) fn from_config(cfg: &Config) -> Result<SigmaScheduler<Euler>, String> {
        let mut train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", true)?;
        train.clamp_zero_snr_tail();
        let prediction = Prediction::parse(
            cfg,
            &["epsilon", "v_prediction", "sample", "original_sample"],
            "EulerDiscreteScheduler",
        )?;
        let log_linear = match cfg.string("interpolation_type", "linear")?.as_str() {
            "linear" => false,
            "log_linear" => true,
            s => return Err(format!("scheduler config: interpolation_type '{s}' is not supported (expected linear or log_linear)")),
        };
        let continuous = match cfg.string("timestep_type", "discrete")?.as_str() {
            "discrete" => false,
            "continuous" => prediction == Prediction::Velocity,
            s => return Err(format!("scheduler config: timestep_type '{s}' is not supported (expected discrete or continuous)")),
        };
        let options = SigmaOptions {
            sigma_spacing: SigmaSpacing::parse(cfg)?,
            log_linear,
            sigma_min: cfg.opt_f64("sigma_min")?,
            sigma_max: cfg.opt_f64("sigma_max")?,
            final_sigma_min: parse_final_sigma_is_min(cfg)?,
            continuous,
        };
        let schedule = SigmaSchedule::from_config(cfg, train, prediction, options)?;
        Ok(SigmaScheduler::new(schedule, Euler))
    }
}

impl SigmaStep for Euler {
    const KIND: SchedulerKind = SchedulerKind::Euler;

    fn step(
        &mut self,
        schedule: &SigmaSchedule,
        i: usize,
        sigma: f32,
        model_output: &Latents,
        sample: &Latents,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        // gamma = 0 (s_churn = 0), so sigma_hat = sigma * (0 + 1) = sigma.
        let sigma_hat = sigma;
        let pred = schedule.pred_original(sigma_hat, model_output, sample)?;
        let dt = schedule.next_sigma(i)? - sigma_hat;
        map2(sample, &pred, |s, p| s + ((s - p) / sigma_hat) * dt)
    }
}
