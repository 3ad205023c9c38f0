//! EulerAncestralDiscreteScheduler (draws noise every step, including the last).

use super::{
    discrete_timesteps_f32, draw_noise, map2, next_sigma, np_interp, require_steps,
    sigma_add_noise, sigma_for_input, sigma_init_noise, sigma_pred_original, sigma_scale_input,
    Config, Latents, NoiseSource, Prediction, Scheduler, Spacing, StepIndex, TrainSchedule,
};

pub(crate) struct EulerAncestral {
    train: TrainSchedule,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: i64,
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    idx: StepIndex,
}

impl EulerAncestral {
    pub(crate) fn from_config(cfg: &Config) -> Result<Self, String> {
        let mut train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", true)?;
        train.clamp_zero_snr_tail();
        Ok(EulerAncestral {
            // diffusers raises NotImplementedError for "sample".
            prediction: Prediction::parse(
                cfg,
                &["epsilon", "v_prediction"],
                "EulerAncestralDiscreteScheduler",
            )?,
            spacing: Spacing::parse(cfg, "linspace")?,
            steps_offset: cfg.steps_offset()?,
            train,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            idx: StepIndex::default(),
        })
    }
}

impl Scheduler for EulerAncestral {
    fn name(&self) -> &'static str {
        "euler-a"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        require_steps(n)?;
        let ts = discrete_timesteps_f32(
            self.spacing,
            n,
            self.train.num_train_timesteps,
            self.steps_offset,
        );
        let table = self.train.sigmas();
        self.sigmas = ts
            .iter()
            .map(|&t| np_interp(t, &table) as f32)
            .chain(std::iter::once(0.0))
            .collect();
        self.timesteps = ts;
        self.idx.reset();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        if self.sigmas.is_empty() {
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
        noise: &mut dyn NoiseSource,
    ) -> Result<Latents, String> {
        let i = self.idx.init(&self.timesteps, timestep, None)?;
        let sigma = *self
            .sigmas
            .get(i)
            .ok_or("step index past the end of the schedule")?;
        let pred = sigma_pred_original(self.prediction, sigma, model_output, sample)?;
        let (from, to) = (sigma, next_sigma(&self.sigmas, i)?);
        let sigma_up = ((to * to) * (from * from - to * to) / (from * from)).sqrt();
        let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        let prev = map2(sample, &pred, |s, p| s + ((s - p) / sigma) * dt)?;
        let n = draw_noise(noise, model_output.shape())?;
        let prev = map2(&prev, &n, |x, n| x + n * sigma_up)?;
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
