//! DDIMScheduler (with eta; eta > 0 draws noise each step).

use super::config::Config;
use super::elementwise::{draw_noise, map2, map3};
use super::kind::SchedulerKind;
use super::prediction::{alpha_pred_original, parse_clip_sample, Prediction};
use super::spacing::{check_steps, int_timestep, require_timesteps_set, Spacing};
use super::training::TrainSchedule;
use super::Scheduler;
use crate::tensor::{Latents, NoiseSource};

pub(crate) struct Ddim {
    train: TrainSchedule,
    final_alpha_cumprod: f32,
    clip_sample: Option<f32>,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: i64,
    eta: f32,
    num_inference_steps: usize,
    timesteps: Vec<f64>,
}

impl Ddim {
    pub(crate) fn from_config(cfg: &Config, eta: f32) -> Result<Self, String> {
        let train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", true)?;
        cfg.reject_thresholding()?;
        if !eta.is_finite() || eta < 0.0 {
            return Err(format!("DDIM eta must be a non-negative number, got {eta}"));
        }
        Ok(Ddim {
            final_alpha_cumprod: train.final_alpha_cumprod(cfg, true)?,
            clip_sample: parse_clip_sample(cfg, true)?,
            prediction: Prediction::parse(
                cfg,
                &["epsilon", "sample", "v_prediction"],
                "DDIMScheduler",
            )?,
            spacing: Spacing::parse(cfg, "leading")?,
            steps_offset: cfg.steps_offset()?,
            eta,
            train,
            num_inference_steps: 0,
            timesteps: Vec::new(),
        })
    }
}

impl Scheduler for Ddim {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        check_steps(n, self.train.num_train_timesteps)?;
        self.timesteps =
            self.spacing
                .integer_timesteps(n, self.train.num_train_timesteps, self.steps_offset);
        self.num_inference_steps = n;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Latents,
        timestep: f64,
        sample: &Latents,
        noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        require_timesteps_set(self.num_inference_steps, "DDIM")?;
        let t = int_timestep(timestep)?;
        let prev_t = t - (self.train.num_train_timesteps / self.num_inference_steps) as i64;
        let (a_t, a_prev) = self.train.alphas(t, prev_t, self.final_alpha_cumprod)?;
        let b_t = 1.0 - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());

        // The predicted noise comes from the unclipped x0 (use_clipped_model_output=False).
        let x0 = alpha_pred_original(self.prediction, a_t, model_output, sample, self.clip_sample)?;
        let eps = match self.prediction {
            Prediction::Epsilon => model_output.clone(),
            Prediction::Sample => map2(sample, model_output, |s, m| (s - sa * m) / sb)?,
            Prediction::Velocity => map2(model_output, sample, |m, s| sa * m + sb * s)?,
        };

        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev = self.eta * variance.sqrt();
        let dir_coeff = (1.0 - a_prev - std_dev * std_dev).sqrt();
        let sa_prev = a_prev.sqrt();
        if self.eta > 0.0 {
            let n = draw_noise(noise, model_output.shape())?;
            map3(&x0, &eps, &n, |x, e, n| {
                (sa_prev * x + dir_coeff * e) + std_dev * n
            })
        } else {
            map2(&x0, &eps, |x, e| sa_prev * x + dir_coeff * e)
        }
    }

    fn add_noise(&self, original: &Latents, noise: &Latents, timestep: f64) -> Latents {
        self.train.add_noise(original, noise, timestep)
    }
}
