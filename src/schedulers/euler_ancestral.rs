//! EulerAncestralDiscreteScheduler (draws noise every step, including the last).

use super::config::Config;
use super::elementwise::{draw_noise, map2};
use super::kind::SchedulerKind;
use super::prediction::Prediction;
use super::sigma_schedule::{SigmaOptions, SigmaSchedule, SigmaScheduler, SigmaStep};
use super::training::TrainSchedule;
use crate::tensor::{Latents, NoiseSource};

pub(crate) struct EulerAncestral;

impl EulerAncestral {
    pub(crate) fn from_config(cfg: &Config) -> Result<SigmaScheduler<EulerAncestral>, String> {
        let mut train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", true)?;
        train.clamp_zero_snr_tail();
        // diffusers raises NotImplementedError for "sample".
        let prediction = Prediction::parse(
            cfg,
            &["epsilon", "v_prediction"],
            "EulerAncestralDiscreteScheduler",
        )?;
        // The class takes none of the sigma options: interpolated sigmas, final sigma 0.
        let schedule = SigmaSchedule::from_config(cfg, train, prediction, SigmaOptions::default())?;
        Ok(SigmaScheduler::new(schedule, EulerAncestral))
    }
}

impl SigmaStep for EulerAncestral {
    const KIND: SchedulerKind = SchedulerKind::EulerAncestral;

    fn step(
        &mut self,
        schedule: &SigmaSchedule,
        i: usize,
        sigma: f32,
        model_output: &Latents,
        sample: &Latents,
        noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        let pred = schedule.pred_original(sigma, model_output, sample)?;
        let (from, to) = (sigma, schedule.next_sigma(i)?);
        let sigma_up = ((to * to) * (from * from - to * to) / (from * from)).sqrt();
        let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        let prev = map2(sample, &pred, |s, p| s + ((s - p) / sigma) * dt)?;
        let n = draw_noise(noise, model_output.shape())?;
        map2(&prev, &n, |x, n| x + n * sigma_up)
    }
}
