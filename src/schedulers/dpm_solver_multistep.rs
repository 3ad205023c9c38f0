//! DPMSolverMultistepScheduler: DPM-Solver / DPM-Solver++ (and their SDE variants), orders 1-3.

use ndarray::{Axis, Slice};

use super::config::Config;
use super::elementwise::{draw_noise, map2, map_n};
use super::kind::SchedulerKind;
use super::numpy::{np_interp, np_round};
use super::prediction::Prediction;
use super::sigmas::{log_sigmas, parse_final_sigma_is_min, sigma_to_t, SigmaSpacing};
use super::spacing::{require_steps, require_timesteps_set, trailing, Spacing};
use super::step_index::StepIndex;
use super::torch::{exp_f32, ln_f32};
use super::training::TrainSchedule;
use super::Scheduler;
use crate::tensor::{Latents, NoiseSource};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    DpmSolver,
    DpmSolverPP,
    SdeDpmSolver,
    SdeDpmSolverPP,
}

impl Algorithm {
    /// Whether the model output is converted to x0 (data prediction, "++") or to noise.
    fn predicts_data(self) -> bool {
        matches!(self, Algorithm::DpmSolverPP | Algorithm::SdeDpmSolverPP)
    }
    fn is_sde(self) -> bool {
        matches!(self, Algorithm::SdeDpmSolver | Algorithm::SdeDpmSolverPP)
    }
}

pub(crate) struct DpmSolverMultistep {
    train: TrainSchedule,
    prediction: Prediction,
    algorithm: Algorithm,
    heun: bool,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    sigma_spacing: SigmaSpacing,
    final_sigma_min: bool,
    lambda_min_clipped: f64,
    learned_variance: bool,
    spacing: Spacing,
    steps_offset: i64,
    /// beta_schedule == "squaredcos_cap_v2": Karras/Lu timesteps are truncated instead of rounded.
    cosine: bool,

    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    idx: StepIndex,
    model_outputs: Vec<Option<Latents>>,
    lower_order_nums: usize,
}

/// alpha_t, sigma_t of the VP process at noise level sigma (f32 as torch computes them).
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

fn lambda(alpha: f32, sigma: f32) -> f32 {
    ln_f32(alpha) - ln_f32(sigma)
}

impl DpmSolverMultistep {
    pub(crate) fn from_config(cfg: &Config) -> Result<Self, String> {
        let beta_schedule = cfg.string("beta_schedule", "linear")?;
        let mut train = TrainSchedule::from_config(cfg, 0.0001, 0.02, "linear", true)?;
        train.clamp_zero_snr_tail();
        cfg.reject_thresholding()?;
        cfg.reject_true(
            "use_flow_sigmas",
            "flow-matching sigmas are not used by Stable Diffusion models",
        )?;
        let algorithm = match cfg.string("algorithm_type", "dpmsolver++")?.as_str() {
            "dpmsolver" => Algorithm::DpmSolver,
            // diffusers maps the DEIS name onto dpmsolver++.
            "dpmsolver++" | "deis" => Algorithm::DpmSolverPP,
            "sde-dpmsolver" => Algorithm::SdeDpmSolver,
            "sde-dpmsolver++" => Algorithm::SdeDpmSolverPP,
            s => return Err(format!("scheduler config: algorithm_type '{s}' is not supported (expected dpmsolver, dpmsolver++, sde-dpmsolver or sde-dpmsolver++)")),
        };
        let heun = match cfg.string("solver_type", "midpoint")?.as_str() {
            // diffusers maps UniPC/DEIS solver names onto midpoint.
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            "heun" => true,
            s => {
                return Err(format!(
                "scheduler config: solver_type '{s}' is not supported (expected midpoint or heun)"
            ))
            }
        };
        let final_sigma_min = parse_final_sigma_is_min(cfg)?;
        if !algorithm.predicts_data() && !final_sigma_min {
            return Err("scheduler config: final_sigmas_type 'zero' is not supported with algorithm_type dpmsolver/sde-dpmsolver; use sigma_min".into());
        }
        let solver_order = cfg.usize("solver_order", 2)?;
        if solver_order == 0 {
            return Err("scheduler config: solver_order must be at least 1".into());
        }
        if solver_order >= 3 && algorithm == Algorithm::SdeDpmSolver {
            return Err("scheduler config: solver_order 3 is not implemented for sde-dpmsolver (diffusers has no third-order SDE update for it)".into());
        }
        // Karras sigmas take precedence over Lu lambdas, Lu lambdas over exponential sigmas.
        let sigma_spacing = match SigmaSpacing::parse(cfg)? {
            SigmaSpacing::Karras => SigmaSpacing::Karras,
            _ if cfg.bool("use_lu_lambdas", false)? => SigmaSpacing::Lu,
            other => other,
        };
        let learned_variance = matches!(
            cfg.opt_string("variance_type")?.as_deref(),
            Some("learned") | Some("learned_range")
        );
        Ok(DpmSolverMultistep {
            prediction: Prediction::parse(
                cfg,
                &["epsilon", "sample", "v_prediction"],
                "DPMSolverMultistepScheduler",
            )?,
            algorithm,
            heun,
            solver_order,
            lower_order_final: cfg.bool("lower_order_final", true)?,
            euler_at_final: cfg.bool("euler_at_final", false)?,
            sigma_spacing,
            final_sigma_min,
            lambda_min_clipped: cfg
                .opt_f64("lambda_min_clipped")?
                .unwrap_or(f64::NEG_INFINITY),
            learned_variance,
            spacing: Spacing::parse(cfg, "linspace")?,
            steps_offset: cfg.steps_offset()?,
            cosine: beta_schedule == "squaredcos_cap_v2",
            train,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            idx: StepIndex::default(),
            model_outputs: vec![None; solver_order],
            lower_order_nums: 0,
        })
    }

    /// How many training timesteps lambda_min_clipped cuts off the noisy end:
    /// clipped_idx = searchsorted(flip(lambda_t), lambda_min_clipped); lambda_t falls with t.
    fn clipped_timesteps(&self) -> usize {
        self.train
            .alphas_cumprod
            .iter()
            .filter(|&&a| (lambda(a.sqrt(), (1.0 - a).sqrt()) as f64) < self.lambda_min_clipped)
            .count()
    }

    /// DPM-Solver's spacing over [0, last): linspace and leading place n + 1 timesteps and drop
    /// the final one (t = 0); trailing counts down from `last` by num_train_timesteps / n.
    fn spaced_timesteps(&self, n: usize, last: usize) -> Vec<f64> {
        match self.spacing {
            Spacing::Trailing => trailing(last, self.train.num_train_timesteps as f64 / n as f64),
            spacing => {
                let mut ts = spacing.integer_timesteps(n + 1, last, self.steps_offset);
                ts.pop();
                ts
            }
        }
    }

    /// The timestep of a Karras / Lu / exponential sigma: diffusers rounds it for Karras and Lu
    /// sigmas, except with the cosine beta schedule (squaredcos_cap_v2), and never for
    /// exponential sigmas; set_timesteps then truncates it to an integer.
    fn converted_timestep(&self, t: f64) -> f64 {
        if self.cosine || self.sigma_spacing == SigmaSpacing::Exponential {
            t
        } else {
            np_round(t)
        }
    }

    /// Model output -> x0 (DPM-Solver++) or epsilon (DPM-Solver), at the current sigma.
    fn convert_model_output(
        &self,
        model_output: &Latents,
        sample: &Latents,
        i: usize,
    ) -> Result<Latents, String> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i]);
        let sliced;
        let eps_out = if self.learned_variance && model_output.ndim() >= 2 {
            // model_output[:, :3]: drop the learned variance channels.
            let c = model_output.shape()[1].min(3);
            sliced = model_output
                .slice_axis(Axis(1), Slice::from(0..c))
                .to_owned();
            &sliced
        } else {
            model_output
        };
        match (self.algorithm.predicts_data(), self.prediction) {
            (true, Prediction::Epsilon) => {
                map2(sample, eps_out, |s, m| (s - sigma_t * m) / alpha_t)
            }
            (true, Prediction::Sample) => Ok(model_output.clone()),
            (true, Prediction::Velocity) => {
                map2(sample, model_output, |s, m| alpha_t * s - sigma_t * m)
            }
            (false, Prediction::Epsilon) => Ok(eps_out.clone()),
            (false, Prediction::Sample) => {
                map2(sample, model_output, |s, m| (s - alpha_t * m) / sigma_t)
            }
            (false, Prediction::Velocity) => {
                map2(model_output, sample, |m, s| alpha_t * m + sigma_t * s)
            }
        }
    }

    fn first_order(
        &self,
        i: usize,
        m: &Latents,
        sample: &Latents,
        noise: Option<&Latents>,
    ) -> Result<Latents, String> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        match (self.algorithm, noise) {
            (Algorithm::DpmSolverPP, _) => {
                let (cs, cm) = (sigma_t / sigma_s, alpha_t * (exp_f32(-h) - 1.0));
                map2(sample, m, |s, m| cs * s - cm * m)
            }
            (Algorithm::DpmSolver, _) => {
                let (cs, cm) = (alpha_t / alpha_s, sigma_t * (exp_f32(h) - 1.0));
                map2(sample, m, |s, m| cs * s - cm * m)
            }
            (Algorithm::SdeDpmSolverPP, Some(n)) => {
                let e = exp_f32(-2.0 * h);
                let cs = sigma_t / sigma_s * exp_f32(-h);
                let cm = alpha_t * (1.0 - e);
                let cn = sigma_t * (1.0 - e).sqrt();
                map_n(&[sample, m, n], |v| (cs * v[0] + cm * v[1]) + cn * v[2])
            }
            (Algorithm::SdeDpmSolver, Some(n)) => {
                let cs = alpha_t / alpha_s;
                let cm = 2.0 * (sigma_t * (exp_f32(h) - 1.0));
                let cn = sigma_t * (exp_f32(2.0 * h) - 1.0).sqrt();
                map_n(&[sample, m, n], |v| (cs * v[0] - cm * v[1]) + cn * v[2])
            }
            (_, None) => Err("DPM-Solver SDE update needs noise".into()),
        }
    }

    fn second_order(
        &self,
        i: usize,
        sample: &Latents,
        noise: Option<&Latents>,
    ) -> Result<Latents, String> {
        let (m0, m1) = (self.output(1)?, self.output(2)?);
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let (lt, ls0, ls1) = (
            lambda(alpha_t, sigma_t),
            lambda(alpha_s0, sigma_s0),
            lambda(alpha_s1, sigma_s1),
        );
        let (h, h0) = (lt - ls0, ls0 - ls1);
        let r0 = h0 / h;
        let inv_r0 = 1.0 / r0;
        let heun = self.heun;
        // x_t = cs * sample + c0 * D0 + c1 * D1 (+ cn * noise); signs as in diffusers.
        match (self.algorithm, noise) {
            (Algorithm::DpmSolverPP, _) => {
                let cs = sigma_t / sigma_s0;
                let c0 = alpha_t * (exp_f32(-h) - 1.0);
                let c1 = if heun {
                    alpha_t * ((exp_f32(-h) - 1.0) / h + 1.0)
                } else {
                    0.5 * c0
                };
                map_n(&[sample, m0, m1], |v| {
                    let d1 = inv_r0 * (v[1] - v[2]);
                    if heun {
                        (cs * v[0] - c0 * v[1]) + c1 * d1
                    } else {
                        (cs * v[0] - c0 * v[1]) - c1 * d1
                    }
                })
            }
            (Algorithm::DpmSolver, _) => {
                let cs = alpha_t / alpha_s0;
                let c0 = sigma_t * (exp_f32(h) - 1.0);
                let c1 = if heun {
                    sigma_t * ((exp_f32(h) - 1.0) / h - 1.0)
                } else {
                    0.5 * c0
                };
                map_n(&[sample, m0, m1], |v| {
                    let d1 = inv_r0 * (v[1] - v[2]);
                    (cs * v[0] - c0 * v[1]) - c1 * d1
                })
            }
            (Algorithm::SdeDpmSolverPP, Some(n)) => {
                let e2 = exp_f32(-2.0 * h);
                let cs = sigma_t / sigma_s0 * exp_f32(-h);
                let c0 = alpha_t * (1.0 - e2);
                let c1 = if heun {
                    alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0)
                } else {
                    0.5 * c0
                };
                let cn = sigma_t * (1.0 - e2).sqrt();
                map_n(&[sample, m0, m1, n], |v| {
                    let d1 = inv_r0 * (v[1] - v[2]);
                    ((cs * v[0] + c0 * v[1]) + c1 * d1) + cn * v[3]
                })
            }
            (Algorithm::SdeDpmSolver, Some(n)) => {
                let cs = alpha_t / alpha_s0;
                let c0 = 2.0 * (sigma_t * (exp_f32(h) - 1.0));
                let c1 = if heun {
                    2.0 * (sigma_t * ((exp_f32(h) - 1.0) / h - 1.0))
                } else {
                    sigma_t * (exp_f32(h) - 1.0)
                };
                let cn = sigma_t * (exp_f32(2.0 * h) - 1.0).sqrt();
                map_n(&[sample, m0, m1, n], |v| {
                    let d1 = inv_r0 * (v[1] - v[2]);
                    ((cs * v[0] - c0 * v[1]) - c1 * d1) + cn * v[3]
                })
            }
            (_, None) => Err("DPM-Solver SDE update needs noise".into()),
        }
    }

    fn third_order(
        &self,
        i: usize,
        sample: &Latents,
        noise: Option<&Latents>,
    ) -> Result<Latents, String> {
        let (m0, m1, m2) = (self.output(1)?, self.output(2)?, self.output(3)?);
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let (alpha_s2, sigma_s2) = alpha_sigma(self.sigmas[i - 2]);
        let lt = lambda(alpha_t, sigma_t);
        let (ls0, ls1, ls2) = (
            lambda(alpha_s0, sigma_s0),
            lambda(alpha_s1, sigma_s1),
            lambda(alpha_s2, sigma_s2),
        );
        let (h, h0, h1) = (lt - ls0, ls0 - ls1, ls1 - ls2);
        let (r0, r1) = (h0 / h, h1 / h);
        let (inv_r0, inv_r1) = (1.0 / r0, 1.0 / r1);
        let c_d1 = r0 / (r0 + r1);
        let c_d2 = 1.0 / (r0 + r1);
        // D0 = m0, D1 = D1_0 + c_d1 (D1_0 - D1_1), D2 = c_d2 (D1_0 - D1_1).
        let ds = move |v: &[f32]| {
            let d1_0 = inv_r0 * (v[1] - v[2]);
            let d1_1 = inv_r1 * (v[2] - v[3]);
            (d1_0 + c_d1 * (d1_0 - d1_1), c_d2 * (d1_0 - d1_1))
        };
        match (self.algorithm, noise) {
            (Algorithm::DpmSolverPP, _) => {
                let cs = sigma_t / sigma_s0;
                let e = exp_f32(-h);
                let c0 = alpha_t * (e - 1.0);
                let c1 = alpha_t * ((e - 1.0) / h + 1.0);
                let c2 = alpha_t * ((e - 1.0 + h) / (h * h) - 0.5);
                map_n(&[sample, m0, m1, m2], |v| {
                    let (d1, d2) = ds(v);
                    ((cs * v[0] - c0 * v[1]) + c1 * d1) - c2 * d2
                })
            }
            (Algorithm::DpmSolver, _) => {
                let cs = alpha_t / alpha_s0;
                let e = exp_f32(h);
                let c0 = sigma_t * (e - 1.0);
                let c1 = sigma_t * ((e - 1.0) / h - 1.0);
                let c2 = sigma_t * ((e - 1.0 - h) / (h * h) - 0.5);
                map_n(&[sample, m0, m1, m2], |v| {
                    let (d1, d2) = ds(v);
                    ((cs * v[0] - c0 * v[1]) - c1 * d1) - c2 * d2
                })
            }
            (Algorithm::SdeDpmSolverPP, Some(n)) => {
                let e2 = exp_f32(-2.0 * h);
                let cs = sigma_t / sigma_s0 * exp_f32(-h);
                let c0 = alpha_t * (1.0 - e2);
                let c1 = alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0);
                let two_h = 2.0 * h;
                let c2 = alpha_t * ((1.0 - e2 - 2.0 * h) / (two_h * two_h) - 0.5);
                let cn = sigma_t * (1.0 - e2).sqrt();
                map_n(&[sample, m0, m1, m2, n], |v| {
                    let (d1, d2) = ds(v);
                    (((cs * v[0] + c0 * v[1]) + c1 * d1) + c2 * d2) + cn * v[4]
                })
            }
            (Algorithm::SdeDpmSolver, _) => {
                Err("third-order sde-dpmsolver is not implemented".into())
            }
            (_, None) => Err("DPM-Solver SDE update needs noise".into()),
        }
    }

    /// model_outputs[-k].
    fn output(&self, k: usize) -> Result<&Latents, String> {
        self.model_outputs
            .len()
            .checked_sub(k)
            .and_then(|j| self.model_outputs[j].as_ref())
            .ok_or_else(|| "DPM-Solver: missing previous model output".to_string())
    }
}

impl Scheduler for DpmSolverMultistep {
    fn kind(&self) -> SchedulerKind {
        if self.sigma_spacing == SigmaSpacing::Karras {
            SchedulerKind::DpmPp2mKarras
        } else {
            SchedulerKind::DpmPp2m
        }
    }

    fn set_timesteps(&mut self, n: usize) -> Result<(), String> {
        require_steps(n)?;
        let num_train = self.train.num_train_timesteps;
        let mut ts = self.spaced_timesteps(n, num_train - self.clipped_timesteps());
        let table = self.train.sigmas();
        let (smin, smax) = (table[0] as f64, table[num_train - 1] as f64);
        let sigmas = match self.sigma_spacing.convert(smin, smax, n) {
            None => ts.iter().map(|&t| np_interp(t, &table)).collect(),
            Some(s) => {
                let ls = log_sigmas(&table);
                ts = s
                    .iter()
                    .map(|&sig| self.converted_timestep(sigma_to_t(sig, &ls)))
                    .collect();
                s
            }
        };
        self.sigmas = self.train.with_final_sigma(&sigmas, self.final_sigma_min);
        // .to(torch.int64) truncates toward zero.
        self.timesteps = ts.iter().map(|&t| t.trunc()).collect();
        self.model_outputs = vec![None; self.solver_order];
        self.lower_order_nums = 0;
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
        let len = self.timesteps.len();
        require_timesteps_set(len, "DPM-Solver")?;
        let i = self.idx.init(&self.timesteps, timestep, Some(len - 1))?;
        if i + 1 >= self.sigmas.len() {
            return Err("step called more times than there are timesteps".into());
        }
        let lower_order_final = i == len - 1
            && (self.euler_at_final
                || (self.lower_order_final && len < 15)
                || !self.final_sigma_min);
        let lower_order_second = i + 2 == len && self.lower_order_final && len < 15;

        let m = self.convert_model_output(model_output, sample, i)?;
        self.model_outputs.rotate_left(1);
        let last = self.model_outputs.len() - 1;
        self.model_outputs[last] = Some(m.clone());

        let n = if self.algorithm.is_sde() {
            Some(draw_noise(noise, m.shape())?)
        } else {
            None
        };
        let prev = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(i, &m, sample, n.as_ref())?
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(i, sample, n.as_ref())?
        } else {
            self.third_order(i, sample, n.as_ref())?
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.idx.step_index = Some(i + 1);
        Ok(prev)
    }

    fn add_noise(&self, original: &Latents, noise: &Latents, timestep: f64) -> Latents {
        let i = self.idx.for_add_noise(
            &self.timesteps,
            timestep,
            Some(self.timesteps.len().saturating_sub(1)),
        );
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas.get(i).copied().unwrap_or(0.0));
        map2(original, noise, |x, n| alpha_t * x + sigma_t * n).unwrap_or_else(|_| original.clone())
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.idx.begin_index = Some(begin_index);
    }
}
