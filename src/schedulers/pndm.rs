//! PNDMScheduler: pseudo numerical methods (Runge-Kutta warm-up, then linear multistep / PLMS).

use super::config::Config;
use super::elementwise::{map2, map3, map4};
use super::kind::SchedulerKind;
use super::prediction::Prediction;
use super::spacing::{check_steps, int_timestep, require_timesteps_set, Spacing};
use super::training::TrainSchedule;
use super::Scheduler;
use crate::tensor::{Latents, NoiseSource};

pub(crate) struct Pndm {
    train: TrainSchedule,
    final_alpha_cumprod: f32,
    skip_prk_steps: bool,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: i64,

    num_inference_steps: usize,
    prk_timesteps: Vec<i64>,
    timesteps: Vec<f64>,
    counter: usize,
    ets: Vec<Latents>,
    cur_model_output: Option<Latents>,
    cur_sample: Option<Latents>,
}

const PNDM_ORDER: usize = 4;

impl Pndm {
    pub(crate) fn from_config(cfg: &Config) -> Result<Self, String> {
        let train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", false)?;
        Ok(Pndm {
            final_alpha_cumprod: train.final_alpha_cumprod(cfg, false)?,
            skip_prk_steps: cfg.bool("skip_prk_steps", false)?,
            prediction: Prediction::parse(cfg, &["epsilon", "v_prediction"], "PNDMScheduler")?,
            spacing: Spacing::parse(cfg, "leading")?,
            steps_offset: cfg.steps_offset()?,
            train,
            num_inference_steps: 0,
            prk_timesteps: Vec::new(),
            timesteps: Vec::new(),
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
        })
    }

    /// x_{t-δ} from x_t, formula (9) of the PNDM paper.
    fn prev_sample(
        &self,
        sample: &Latents,
        t: i64,
        prev_t: i64,
        model_output: &Latents,
    ) -> Result<Latents, String> {
        let (a_t, a_prev) = self.train.alphas(t, prev_t, self.final_alpha_cumprod)?;
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let model_output = match self.prediction {
            Prediction::Velocity => {
                let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
                map2(model_output, sample, |m, s| sa * m + sb * s)?
            }
            _ => model_output.clone(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let diff = a_prev - a_t;
        map2(sample, &model_output, |s, m| {
            sample_coeff * s - diff * m / denom
        })
    }

    fn step_prk(
        &mut self,
        model_output: &Latents,
        timestep: i64,
        sample: &Latents,
    ) -> Result<Latents, String> {
        let half = (self.train.num_train_timesteps / self.num_inference_steps / 2) as i64;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_t = timestep - diff_to_prev;
        let t = self.prk_timesteps[self.counter / 4 * 4];
        let (c6, c3) = ((1.0f64 / 6.0) as f32, (1.0f64 / 3.0) as f32);
        let add = |acc: &Option<Latents>, c: f32| -> Result<Latents, String> {
            match acc {
                Some(a) => map2(a, model_output, |a, m| a + c * m),
                None => Ok(model_output.mapv(|m| c * m)),
            }
        };
        let model_output = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add(&self.cur_model_output, c6)?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            1 | 2 => {
                self.cur_model_output = Some(add(&self.cur_model_output, c3)?);
                model_output.clone()
            }
            _ => {
                let m = add(&self.cur_model_output, c6)?;
                self.cur_model_output = None;
                m
            }
        };
        let cur_sample = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev = self.prev_sample(&cur_sample, t, prev_t, &model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    fn step_plms(
        &mut self,
        model_output: &Latents,
        timestep: i64,
        sample: &Latents,
    ) -> Result<Latents, String> {
        if !self.skip_prk_steps && self.ets.len() < 3 {
            return Err("PNDM: PLMS steps need at least 3 Runge-Kutta warm-up outputs".into());
        }
        let ratio = (self.train.num_train_timesteps / self.num_inference_steps) as i64;
        let (mut t, mut prev_t) = (timestep, timestep - ratio);
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.clone());
        } else {
            prev_t = timestep;
            t = timestep + ratio;
        }
        let e = &self.ets;
        let n = e.len();
        let mut sample = sample.clone();
        let model_output = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if n == 1 && self.counter == 1 {
            let m = map2(model_output, &e[0], |m, e| (m + e) / 2.0)?;
            sample = self
                .cur_sample
                .take()
                .ok_or_else(|| "PNDM: internal state lost (no stored sample)".to_string())?;
            m
        } else if n == 2 {
            map2(&e[1], &e[0], |e1, e2| (3.0 * e1 - e2) / 2.0)?
        } else if n == 3 {
            map3(&e[2], &e[1], &e[0], |e1, e2, e3| {
                (23.0 * e1 - 16.0 * e2 + 5.0 * e3) / 12.0
            })?
        } else {
            let c = (1.0f64 / 24.0) as f32;
            map4(
                &e[n - 1],
                &e[n - 2],
                &e[n - 3],
                &e[n - 4],
                |e1, e2, e3, e4| c * (55.0 * e1 - 59.0 * e2 + 37.0 * e3 - 9.0 * e4),
            )?
        };
        let prev = self.prev_sample(&sample, t, prev_t, &model_output)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl Scheduler for Pndm {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Pndm
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        let num_train = self.train.num_train_timesteps;
        check_steps(n, num_train)?;
        // Ascending base timesteps.
        let mut base: Vec<i64> = self
            .spacing
            .integer_timesteps(n, num_train, self.steps_offset)
            .into_iter()
            .map(|t| t as i64)
            .collect();
        base.reverse();
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.skip_prk_steps {
            // plms = concat(t[:-1], t[-2:-1], t[-1:])[::-1]: repeats the second-to-last timestep.
            let len = base.len();
            let mut p: Vec<i64> = base[..len - 1].to_vec();
            if len >= 2 {
                p.push(base[len - 2]);
            }
            p.push(base[len - 1]);
            p.reverse();
            (Vec::new(), p)
        } else {
            if base.len() < PNDM_ORDER {
                return Err(format!(
                    "PNDM with skip_prk_steps=false needs at least {PNDM_ORDER} inference steps, got {n}"
                ));
            }
            let half = (num_train / n / 2) as i64;
            let last4 = &base[base.len() - PNDM_ORDER..];
            // repeat(2) + tile([0, half]), drop the last, repeat(2), drop both ends, reverse.
            let rk: Vec<i64> = last4.iter().flat_map(|&t| [t, t + half]).collect();
            let rk: Vec<i64> = rk[..rk.len() - 1].iter().flat_map(|&t| [t, t]).collect();
            let mut rk = rk[1..rk.len() - 1].to_vec();
            rk.reverse();
            let mut p = base[..base.len() - 3].to_vec();
            p.reverse();
            (rk, p)
        };
        self.timesteps = prk.iter().chain(plms.iter()).map(|&t| t as f64).collect();
        self.prk_timesteps = prk;
        self.num_inference_steps = n;
        self.ets.clear();
        self.counter = 0;
        self.cur_model_output = None;
        self.cur_sample = None;
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        require_timesteps_set(self.num_inference_steps, "PNDM")?;
        let t = int_timestep(timestep)?;
        if self.counter < self.prk_timesteps.len() && !self.skip_prk_steps {
            self.step_prk(model_output, t, sample)
        } else {
            self.step_plms(model_output, t, sample)
        }
    }

    fn add_noise(&self, original: &Latents, noise: &Latents, timestep: f64) -> Latents {
        self.train.add_noise(original, noise, timestep)
    }
}
