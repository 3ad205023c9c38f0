//! EulerDiscreteScheduler (k-diffusion Euler; s_churn = 0 as the pipelines call it, so no noise).

use super::{
    discrete_timesteps_f32, exp_f32, ln_f32, log_sigmas, map2, next_sigma, np_interp, numpy_logf,
    parse_final_sigma_is_min, require_steps, sigma_add_noise, sigma_for_input, sigma_init_noise,
    sigma_pred_original, sigma_scale_input, sigma_to_t, torch_linspace_f32, Config, Latents,
    NoiseSource, Prediction, Scheduler, SigmaSpacing, Spacing, StepIndex, TrainSchedule,
};

pub(crate) struct Euler {
    train: TrainSchedule,
    prediction: Prediction,
    log_linear: bool,
    sigma_spacing: SigmaSpacing,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    spacing: Spacing,
    /// timestep_type "continuous" with v_prediction: timesteps are 0.25 * ln(sigma).
    continuous: bool,
    steps_offset: i64,
    final_sigma_min: bool,

    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    idx: StepIndex,
}

impl Euler {
    pub(crate) fn from_config(cfg: &Config) -> Result<Self, String> {
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
        Ok(Euler {
            prediction,
            log_linear,
            sigma_spacing: SigmaSpacing::parse(cfg)?,
            sigma_min: cfg.opt_f64("sigma_min")?,
            sigma_max: cfg.opt_f64("sigma_max")?,
            spacing: Spacing::parse(cfg, "linspace")?,
            continuous,
            steps_offset: cfg.steps_offset()?,
            final_sigma_min: parse_final_sigma_is_min(cfg)?,
            train,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            idx: StepIndex::default(),
        })
    }
}

impl Scheduler for Euler {
    fn name(&self) -> &'static str {
        "euler"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        require_steps(n)?;
        let num_train = self.train.num_train_timesteps;
        let mut ts = discrete_timesteps_f32(self.spacing, n, num_train, self.steps_offset);
        let table = self.train.sigmas();
        let mut sigmas: Vec<f64> = if self.log_linear {
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
        let smin = self.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
        let smax = self.sigma_max.unwrap_or(sigmas[0]);
        if let Some(s) = self.sigma_spacing.convert(smin, smax, n) {
            let ls = log_sigmas(&table);
            ts = s
                .iter()
                .map(|&sig| sigma_to_t(sig, &ls) as f32 as f64)
                .collect();
            sigmas = s;
        }
        let last = if self.final_sigma_min {
            super::sigma_from_alpha_cumprod(self.train.alphas_cumprod[0])
        } else {
            0.0
        };
        self.sigmas = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(last))
            .collect();
        self.timesteps = if self.continuous {
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

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        if self.sigmas.is_empty() {
            // Before set_timesteps diffusers uses the full training sigma table.
            return sigma_init_noise(&self.train.sigmas(), self.spacing);
        }
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
        // gamma = 0 (s_churn = 0), so sigma_hat = sigma * (0 + 1) = sigma.
        let sigma_hat = sigma;
        let pred = sigma_pred_original(self.prediction, sigma_hat, model_output, sample)?;
        let dt = next_sigma(&self.sigmas, i)? - sigma_hat;
        let prev = map2(sample, &pred, |s, p| s + ((s - p) / sigma_hat) * dt)?;
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
