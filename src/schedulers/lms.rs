//! LMSDiscreteScheduler (linear multistep, order 4).

use super::config::Config;
use super::elementwise::map2;
use super::kind::SchedulerKind;
use super::prediction::Prediction;
use super::sigma_schedule::{SigmaOptions, SigmaSchedule, SigmaScheduler, SigmaStep};
use super::sigmas::SigmaSpacing;
use super::training::TrainSchedule;
use super::Scheduler;
use crate::tensor::{Latents, NoiseSource};

/// diffusers' LMS step default.
const ORDER: usize = 4;

/// The update rule; keeps the last ORDER derivatives.
#[derive(Default)]
pub(crate) struct Lms {
    derivatives: Vec<Latents>,
}

impl Lms {
    pub(crate) fn from_config(cfg: &Config) -> Result<SigmaScheduler<Lms>, String> {
        let train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", false)?;
        let prediction = Prediction::parse(
            cfg,
            &["epsilon", "v_prediction", "sample"],
            "LMSDiscreteScheduler",
        )?;
        let options = SigmaOptions {
            sigma_spacing: SigmaSpacing::parse(cfg)?,
            ..SigmaOptions::default()
        };
        let num_train = train.num_train_timesteps;
        let schedule = SigmaSchedule::from_config(cfg, train, prediction, options)?;
        let mut s = SigmaScheduler::new(schedule, Lms::default());
        // diffusers' __init__ calls set_timesteps(num_train_timesteps).
        s.set_timesteps(num_train)?;
        Ok(s)
    }
}

/// Integral over [sigma_t, sigma_{t+1}] of the Lagrange basis polynomial `current` through
/// sigmas[t], sigmas[t-1], ... (diffusers integrates it with scipy.integrate.quad; the integrand
/// is a polynomial of degree <= 3, which 3-point Gauss-Legendre integrates exactly).
fn lms_coefficient(sigmas: &[f32], order: usize, t: usize, current: usize) -> f64 {
    let s = |k: usize| sigmas[t - k] as f64;
    let basis = |tau: f64| {
        (0..order)
            .filter(|&k| k != current)
            .fold(1.0, |p, k| p * ((tau - s(k)) / (s(current) - s(k))))
    };
    let (a, b) = (sigmas[t] as f64, sigmas[t + 1] as f64);
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    let x = (3.0f64 / 5.0).sqrt();
    half * (8.0 / 9.0 * basis(mid) + 5.0 / 9.0 * (basis(mid - half * x) + basis(mid + half * x)))
}

impl SigmaStep for Lms {
    const KIND: SchedulerKind = SchedulerKind::Lms;

    fn reset(&mut self) {
        self.derivatives.clear();
    }

    fn step(
        &mut self,
        schedule: &SigmaSchedule,
        i: usize,
        sigma: f32,
        model_output: &Latents,
        sample: &Latents,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        schedule.next_sigma(i)?;
        let pred = schedule.pred_original(sigma, model_output, sample)?;
        let derivative = map2(sample, &pred, |s, p| (s - p) / sigma)?;
        self.derivatives.push(derivative);
        if self.derivatives.len() > ORDER {
            self.derivatives.remove(0);
        }
        let order = (i + 1).min(ORDER);
        // sample + sum(coeff * derivative for coeff, derivative in zip(coeffs, reversed(derivatives)))
        let mut acc: Option<Latents> = None;
        for (k, d) in (0..order).zip(self.derivatives.iter().rev()) {
            let c = lms_coefficient(&schedule.sigmas, order, i, k) as f32;
            acc = Some(match acc {
                None => d.mapv(|d| c * d),
                Some(a) => map2(&a, d, |a, d| a + c * d)?,
            });
        }
        match acc {
            Some(a) => map2(sample, &a, |s, a| s + a),
            None => Ok(sample.clone()),
        }
    }
}
