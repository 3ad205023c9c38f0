//! LCMScheduler (latent consistency models; draws noise each step except the last).

use super::config::Config;
use super::elementwise::{draw_noise, map2};
use super::kind::SchedulerKind;
use super::numpy::np_linspace;
use super::prediction::{alpha_pred_original, parse_clip_sample, Prediction};
use super::spacing::{int_timestep, require_steps, require_timesteps_set};
use super::step_index::StepIndex;
use super::training::TrainSchedule;
use super::Scheduler;
use crate::tensor::{Latents, NoiseSource};

pub(crate) struct Lcm {
    train: TrainSchedule,
    final_alpha_cumprod: f32,
    original_inference_steps: usize,
    clip_sample: Option<f32>,
    prediction: Prediction,
    timestep_scaling: f32,
    num_inference_steps: usize,
    timesteps: Vec<f64>,
    idx: StepIndex,
}

impl Lcm {
    pub(crate) fn from_config(cfg: &Config) -> Result<Self, String> {
        let train = TrainSchedule::from_config(cfg, 0.00085, 0.012, "scaled_linear", true)?;
        cfg.reject_thresholding()?;
        Ok(Lcm {
            final_alpha_cumprod: train.final_alpha_cumprod(cfg, true)?,
            original_inference_steps: cfg.usize("original_inference_steps", 50)?,
            clip_sample: parse_clip_sample(cfg, false)?,
            prediction: Prediction::parse(
                cfg,
                &["epsilon", "sample", "v_prediction"],
                "LCMScheduler",
            )?,
            timestep_scaling: cfg.f64("timestep_scaling", 10.0)? as f32,
            train,
            num_inference_steps: 0,
            timesteps: Vec::new(),
            idx: StepIndex::default(),
        })
    }
}

impl Scheduler for Lcm {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lcm
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        let num_train = self.train.num_train_timesteps;
        let original = self.original_inference_steps;
        if original == 0 || original > num_train {
            return Err(format!(
                "LCM original_inference_steps ({original}) must be between 1 and num_train_timesteps ({num_train})"
            ));
        }
        require_steps(n)?;
        if n > original {
            return Err(format!(
                "LCM num_inference_steps ({n}) cannot be larger than original_inference_steps ({original})"
            ));
        }
        // The distillation schedule k-1, 2k-1, ..., reversed, subsampled at floor(linspace(0, len, n, endpoint=False)).
        let k = (num_train / original) as i64;
        let origin: Vec<i64> = (1..=original as i64).rev().map(|i| i * k - 1).collect();
        self.timesteps = np_linspace(0.0, origin.len() as f64, n, false)
            .into_iter()
            .map(|x| origin[(x.floor() as usize).min(origin.len() - 1)] as f64)
            .collect();
        self.num_inference_steps = n;
        self.idx.reset();
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
        require_timesteps_set(self.num_inference_steps, "LCM")?;
        let i = self.idx.init(&self.timesteps, timestep, None)?;
        let t = int_timestep(timestep)?;
        let prev_t = match self.timesteps.get(i + 1) {
            Some(&p) => p as i64,
            None => t,
        };
        let (a_t, a_prev) = self.train.alphas(t, prev_t, self.final_alpha_cumprod)?;

        // Boundary-condition scalings with sigma_data = 0.5 (the timestep is an int64 tensor, so f32 math).
        let scaled = t as f32 * self.timestep_scaling;
        let c_skip = 0.25 / (scaled * scaled + 0.25);
        let c_out = scaled / (scaled * scaled + 0.25).sqrt();

        let x0 = alpha_pred_original(self.prediction, a_t, model_output, sample, self.clip_sample)?;
        let denoised = map2(&x0, sample, |x, s| c_out * x + c_skip * s)?;
        let prev = if i + 1 != self.num_inference_steps {
            let n = draw_noise(noise, model_output.shape())?;
            let (sa_prev, sb_prev) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
            map2(&denoised, &n, |d, n| sa_prev * d + sb_prev * n)?
        } else {
            denoised
        };
        self.idx.step_index = Some(i + 1);
        Ok(prev)
    }

    fn add_noise(&self, original: &Latents, noise: &Latents, timestep: f64) -> Latents {
        self.train.add_noise(original, noise, timestep)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.idx.begin_index = Some(begin_index);
    }
}
