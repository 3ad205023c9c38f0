//! LMSDiscreteScheduler (linear multistep, order 4).

use super::{
    discrete_timesteps_f32, log_sigmas, map2, next_sigma, np_interp, require_steps,
    sigma_add_noise, sigma_for_input, sigma_init_noise, sigma_pred_original, sigma_scale_input,
    sigma_to_t, Config, Latents, NoiseSource, Prediction, Scheduler, SigmaSpacing, Spacing,
    StepIndex, TrainSchedule,
};

/// diffusers' LMS step default.
const ORDER: usize = 4;

pub(crate) struct Lms {
    train: TrainSchedule,
    prediction: Prediction,
    sigma_spacing: SigmaSpacing,
    spacing: Spacing,
    steps_offset: i64,
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    idx: StepIndex,
    derivatives: Vec<Latents>,
}

impl Lms {
    pub(crate) fn from_config(cfg: &Config) -> Result<Self, String> {
        let train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", false)?;
        let mut s = Lms {
            prediction: Prediction::parse(
                cfg,
                &["epsilon", "v_prediction", "sample"],
                "LMSDiscreteScheduler",
            )?,
            sigma_spacing: SigmaSpacing::parse(cfg)?,
            spacing: Spacing::parse(cfg, "linspace")?,
            steps_offset: cfg.steps_offset()?,
            train,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            idx: StepIndex::default(),
            derivatives: Vec::new(),
        };
        // diffusers' __init__ calls set_timesteps(num_train_timesteps).
        s.set_timesteps(s.train.num_train_timesteps)?;
        Ok(s)
    }

    /// Integral over [sigma_t, sigma_{t+1}] of the Lagrange basis polynomial `current` through
    /// sigmas[t], sigmas[t-1], ... (diffusers integrates it with scipy.integrate.quad; the integrand
    /// is a polynomial of degree <= 3, which 3-point Gauss-Legendre integrates exactly).
    fn lms_coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = |k: usize| self.sigmas[t - k] as f64;
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .fold(1.0, |p, k| p * ((tau - s(k)) / (s(current) - s(k))))
        };
        let (a, b) = (self.sigmas[t] as f64, self.sigmas[t + 1] as f64);
        let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
        let x = (3.0f64 / 5.0).sqrt();
        half * (8.0 / 9.0 * basis(mid)
            + 5.0 / 9.0 * (basis(mid - half * x) + basis(mid + half * x)))
    }
}

impl Scheduler for Lms {
    fn name(&self) -> &'static str {
        "lms"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        require_steps(n)?;
        let mut ts = discrete_timesteps_f32(
            self.spacing,
            n,
            self.train.num_train_timesteps,
            self.steps_offset,
        );
        let table = self.train.sigmas();
        let mut sigmas: Vec<f64> = ts.iter().map(|&t| np_interp(t, &table)).collect();
        if let Some(s) = self
            .sigma_spacing
            .convert(sigmas[sigmas.len() - 1], sigmas[0], n)
        {
            let ls = log_sigmas(&table);
            ts = s
                .iter()
                .map(|&sig| sigma_to_t(sig, &ls) as f32 as f64)
                .collect();
            sigmas = s;
        }
        self.sigmas = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(0.0))
            .collect();
        self.timesteps = ts;
        self.idx.reset();
        self.derivatives.clear();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        sigma_init_noise(&self.sigmas, self.spacing)
    }

    fn scale_model_input(&self, sample: &Latents, timestep: f64) -> Latents {
        sigma_scale_input(
            sample,
            sigma_for_input(&self.idx, &self.timesteps, &self.sigmas, timestep),
        )
    }

    fn step(
        &mut self,
        model_output: &Latents,
        timestep: f64,
        sample: &Latents,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        let i = self.idx.init(&self.timesteps, timestep, None)?;
        let sigma = *self
            .sigmas
            .get(i)
            .ok_or("step index past the end of the schedule")?;
        next_sigma(&self.sigmas, i)?;
        let pred = sigma_pred_original(self.prediction, sigma, model_output, sample)?;
        let derivative = map2(sample, &pred, |s, p| (s - p) / sigma)?;
        self.derivatives.push(derivative);
        if self.derivatives.len() > ORDER {
            self.derivatives.remove(0);
        }
        let order = (i + 1).min(ORDER);
        // sample + sum(coeff * derivative for coeff, derivative in zip(coeffs, reversed(derivatives)))
        let mut acc: Option<Latents> = None;
        for (k, d) in (0..order).zip(self.derivatives.iter().rev()) {
            let c = self.lms_coefficient(order, i, k) as f32;
            acc = Some(match acc {
                None => d.mapv(|d| c * d),
                Some(a) => map2(&a, d, |a, d| a + c * d)?,
            });
        }
        let prev = match acc {
            Some(a) => map2(sample, &a, |s, a| s + a)?,
            None => sample.clone(),
        };
        self.idx.step_index = Some(i + 1);
        Ok(prev)
    }

    fn add_noise(&self, original: &Latents, noise: &Latents, timestep: f64) -> Latents {
        sigma_add_noise(
            &self.idx,
            &self.timesteps,
            &self.sigmas,
            original,
            noise,
            timestep,
        )
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.idx.begin_index = Some(begin_index);
    }
}
