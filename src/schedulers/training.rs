//! The training noise schedule every scheduler derives from: beta schedules, alphas_cumprod,
//! zero-terminal-SNR rescaling, the training sigmas, and DDPM-style `add_noise`.

use super::config::Config;
use super::elementwise::map2;
use super::torch::{cumprod_f32, torch_linspace_f32};
use crate::tensor::Latents;

/// Sanity bound on schedule lengths (SD uses 1000) so absurd configs fail cleanly instead of
/// exhausting memory.
pub(crate) const MAX_TRAIN_TIMESTEPS: usize = 1_000_000;

/// Every beta is a variance fraction in [0, 1): outside it (beta_start 5, beta_end -3,
/// trained_betas 2.0) `alphas_cumprod` goes negative or NaN, and diffusers would quietly render
/// a black picture.
fn check_betas(betas: &[f32]) -> Result<(), String> {
    match betas.iter().position(|b| !(0.0..1.0).contains(b)) {
        None => Ok(()),
        Some(i) => Err(format!(
            "scheduler config: beta {i} is {}; betas (beta_start, beta_end, trained_betas) must lie in [0, 1)",
            betas[i]
        )),
    }
}

/// The training schedule every scheduler derives from.
pub(crate) struct TrainSchedule {
    pub num_train_timesteps: usize,
    /// torch float32 `alphas_cumprod`.
    pub alphas_cumprod: Vec<f32>,
    pub rescale_betas_zero_snr: bool,
}

impl TrainSchedule {
    /// Reads num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas and (when the
    /// class accepts it) rescale_betas_zero_snr, with the class's defaults.
    pub(crate) fn from_config(
        cfg: &Config,
        beta_start: f64,
        beta_end: f64,
        beta_schedule: &str,
        accepts_rescale: bool,
    ) -> Result<Self, String> {
        let n = cfg.usize("num_train_timesteps", 1000)?;
        if n > MAX_TRAIN_TIMESTEPS {
            return Err(format!(
                "scheduler config: num_train_timesteps {n} is larger than supported ({MAX_TRAIN_TIMESTEPS})"
            ));
        }
        if n < 2 {
            return Err(format!(
                "scheduler config: num_train_timesteps must be at least 2, got {n}"
            ));
        }
        let beta_start = cfg.f64("beta_start", beta_start)?;
        let beta_end = cfg.f64("beta_end", beta_end)?;
        let schedule = cfg.string("beta_schedule", beta_schedule)?;
        let betas: Vec<f32> = if let Some(tb) = cfg.opt_f64_list("trained_betas")? {
            if tb.len() != n {
                return Err(format!(
                    "scheduler config: trained_betas has {} values but num_train_timesteps is {n}",
                    tb.len()
                ));
            }
            tb.iter().map(|&b| b as f32).collect()
        } else {
            match schedule.as_str() {
                "linear" => torch_linspace_f32(beta_start, beta_end, n),
                // torch.linspace(start**0.5, end**0.5, n, dtype=float32) ** 2
                "scaled_linear" => torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect(),
                "squaredcos_cap_v2" => betas_for_alpha_bar(n),
                s => {
                    return Err(format!(
                        "scheduler config: beta_schedule '{s}' is not supported (expected linear, scaled_linear or squaredcos_cap_v2)"
                    ))
                }
            }
        };
        check_betas(&betas)?;
        let rescale = accepts_rescale && cfg.bool("rescale_betas_zero_snr", false)?;
        let betas = if rescale {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        };
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        Ok(TrainSchedule {
            num_train_timesteps: n,
            alphas_cumprod: cumprod_f32(&alphas),
            rescale_betas_zero_snr: rescale,
        })
    }

    /// alphas_cumprod[t] for an integer timestep (diffusers indexes with it; negative means the
    /// caller's "final" value applies, so callers check that first).
    pub(crate) fn alpha_at(&self, t: i64) -> Result<f32, String> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i).copied())
            .ok_or_else(|| {
                format!(
                    "timestep {t} is outside the training schedule (0..{})",
                    self.num_train_timesteps
                )
            })
    }

    /// `set_alpha_to_one`: the alpha_cumprod "before" timestep 0 that the last step moves to
    /// (1, or alphas_cumprod[0]).
    pub(crate) fn final_alpha_cumprod(&self, cfg: &Config, default: bool) -> Result<f32, String> {
        Ok(if cfg.bool("set_alpha_to_one", default)? {
            1.0
        } else {
            self.alphas_cumprod[0]
        })
    }

    /// (alphas_cumprod[t], alphas_cumprod[prev_t]) for a step from t to prev_t, with
    /// `final_alpha` for prev_t < 0 (past the end of the schedule).
    pub(crate) fn alphas(
        &self,
        t: i64,
        prev_t: i64,
        final_alpha: f32,
    ) -> Result<(f32, f32), String> {
        let a_t = self.alpha_at(t)?;
        let a_prev = if prev_t >= 0 {
            self.alpha_at(prev_t)?
        } else {
            final_alpha
        };
        Ok((a_t, a_prev))
    }

    /// Euler/DPM set alphas_cumprod[-1] = 2**-24 after zero-terminal-SNR rescaling (so sigma stays finite).
    pub(crate) fn clamp_zero_snr_tail(&mut self) {
        if self.rescale_betas_zero_snr {
            if let Some(last) = self.alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
    }

    /// torch f32 `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, ascending in t.
    pub(crate) fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| sigma_from_alpha_cumprod(a))
            .collect()
    }

    /// The schedule's sigmas in float32 followed by the final sigma (`final_sigmas_type`: the
    /// training schedule's smallest sigma if `final_sigma_min`, else 0).
    pub(crate) fn with_final_sigma(&self, sigmas: &[f64], final_sigma_min: bool) -> Vec<f32> {
        let last = if final_sigma_min {
            sigma_from_alpha_cumprod(self.alphas_cumprod[0])
        } else {
            0.0
        };
        sigmas
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(last))
            .collect()
    }

    /// DDPM-style add_noise (PNDM, DDIM, LCM): sqrt(a) * x + sqrt(1 - a) * noise at timestep
    /// `t`. diffusers would raise on an out-of-range timestep; here it is clamped into the
    /// training range since this API cannot fail.
    pub(crate) fn add_noise(&self, original: &Latents, noise: &Latents, t: f64) -> Latents {
        let last = self.num_train_timesteps as f64 - 1.0;
        let i = if t.is_nan() {
            0.0
        } else {
            t.round().clamp(0.0, last)
        } as usize;
        let alpha_cumprod = self.alphas_cumprod[i];
        let sa = alpha_cumprod.sqrt();
        let sb = (1.0 - alpha_cumprod).sqrt();
        map2(original, noise, |x, n| sa * x + sb * n).unwrap_or_else(|_| original.clone())
    }
}

pub(crate) fn sigma_from_alpha_cumprod(a: f32) -> f32 {
    ((1.0 - a) / a).sqrt()
}

/// diffusers' betas_for_alpha_bar with the default cosine transform (float64, then float32).
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = crate::math::cos((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0);
        c * c
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' rescale_zero_terminal_snr (float32 torch ops).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut s: Vec<f32> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let (s0, st) = (s[0], s[s.len() - 1]);
    let scale = s0 / (s0 - st);
    for v in s.iter_mut() {
        *v = (*v - st) * scale;
    }
    let bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}
