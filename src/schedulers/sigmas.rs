//! Sigma schedules: which spacing replaces the interpolated sigmas (Karras, exponential, Lu),
//! the final sigma, and the inversion of a sigma back to a (fractional) training timestep.

use super::config::Config;
use super::numpy::{np_linspace, numpy_logf};

/// `final_sigmas_type`: what the sigma after the last step is.
pub(crate) fn parse_final_sigma_is_min(cfg: &Config) -> Result<bool, String> {
    match cfg.string("final_sigmas_type", "zero")?.as_str() {
        "zero" => Ok(false),
        "sigma_min" => Ok(true),
        s => Err(format!("scheduler config: final_sigmas_type '{s}' is not supported (expected zero or sigma_min)")),
    }
}

/// Which sigma spacing replaces the interpolated one (use_karras_sigmas /
/// use_exponential_sigmas; DPM-Solver also use_lu_lambdas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SigmaSpacing {
    #[default]
    Interpolated,
    Karras,
    Exponential,
    /// use_lu_lambdas: uniform in log-SNR.
    Lu,
}

impl SigmaSpacing {
    /// use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas (at most one; beta sigmas are
    /// not implemented). `use_lu_lambdas` is DPM-Solver's alone, so it reads it itself.
    pub(crate) fn parse(cfg: &Config) -> Result<Self, String> {
        let karras = cfg.bool("use_karras_sigmas", false)?;
        let exponential = cfg.bool("use_exponential_sigmas", false)?;
        let beta = cfg.bool("use_beta_sigmas", false)?;
        if [karras, exponential, beta].iter().filter(|b| **b).count() > 1 {
            return Err("scheduler config: only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used".into());
        }
        if beta {
            return Err("scheduler config: use_beta_sigmas=true is not supported (needs scipy's beta distribution inverse CDF)".into());
        }
        Ok(if karras {
            SigmaSpacing::Karras
        } else if exponential {
            SigmaSpacing::Exponential
        } else {
            SigmaSpacing::Interpolated
        })
    }

    /// The replacement sigmas (float64, descending), or None to keep the interpolated ones.
    pub(crate) fn convert(self, sigma_min: f64, sigma_max: f64, n: usize) -> Option<Vec<f64>> {
        match self {
            SigmaSpacing::Interpolated => None,
            SigmaSpacing::Karras => Some(karras_sigmas(sigma_min, sigma_max, n)),
            SigmaSpacing::Exponential => Some(exponential_sigmas(sigma_min, sigma_max, n)),
            SigmaSpacing::Lu => Some(lu_sigmas(sigma_min, sigma_max, n)),
        }
    }
}

/// diffusers' _sigma_to_t: piecewise-linear inversion of log(sigma) over the training log-sigmas
/// (float32 `log_sigmas`, float64 arithmetic, with `low - high` in float32 as numpy does).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = crate::math::ln(sigma.max(1e-10));
    let n = log_sigmas.len();
    let mut low = 0usize;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            low = i;
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low], log_sigmas[high]);
    let w = (lo as f64 - log_sigma) / ((lo - hi) as f64);
    let w = w.clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

pub(crate) fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| numpy_logf(s)).collect()
}

/// Karras et al. (2022) sigmas, rho = 7, descending from sigma_max to sigma_min (float64).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv_rho = crate::math::powf(sigma_min, 1.0 / rho);
    let max_inv_rho = crate::math::powf(sigma_max, 1.0 / rho);
    np_linspace(0.0, 1.0, n, true)
        .into_iter()
        .map(|r| crate::math::powf(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho))
        .collect()
}

/// exp(linspace(log sigma_max, log sigma_min, n)) (float64).
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(crate::math::ln(sigma_max), crate::math::ln(sigma_min), n, true)
        .into_iter()
        .map(crate::math::exp)
        .collect()
}

/// Lu et al. (2022) sigmas (DPM-Solver's use_lu_lambdas): log-sigma linear from the float32
/// numpy log of sigma_max to that of sigma_min, then exp (float64). diffusers calls these logs
/// "lambdas" (it flips log_sigmas and ramps between the ends).
pub(crate) fn lu_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let log_min = numpy_logf(sigma_min as f32) as f64;
    let log_max = numpy_logf(sigma_max as f32) as f64;
    np_linspace(0.0, 1.0, n, true)
        .into_iter()
        .map(|r| crate::math::exp(log_max + r * (log_min - log_max)))
        .collect()
}
