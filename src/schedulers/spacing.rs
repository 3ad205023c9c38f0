//! Timestep spacing: which training timesteps an inference schedule visits (timestep_spacing
//! linspace / leading / trailing, with steps_offset), and the checks on step counts and
//! timesteps that the schedulers share.

use super::config::Config;
use super::numpy::{np_arange, np_linspace, np_round};
use super::training::MAX_TRAIN_TIMESTEPS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl Spacing {
    pub(crate) fn parse(cfg: &Config, default: &str) -> Result<Self, String> {
        match cfg.string("timestep_spacing", default)?.as_str() {
            "linspace" => Ok(Spacing::Linspace),
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            s => Err(format!(
                "scheduler config: timestep_spacing '{s}' is not supported (expected linspace, leading or trailing)"
            )),
        }
    }

    /// Descending timesteps for the Euler/LMS family (float32 values, as f64):
    /// linspace is not rounded; leading/trailing are integers.
    pub(crate) fn float_timesteps(self, n: usize, num_train: usize, steps_offset: i64) -> Vec<f64> {
        self.timesteps(n, num_train, steps_offset, |t| t as f32 as f64)
    }

    /// Descending integer timesteps as DDIM computes them (linspace rounded half-to-even).
    pub(crate) fn integer_timesteps(
        self,
        n: usize,
        num_train: usize,
        steps_offset: i64,
    ) -> Vec<f64> {
        self.timesteps(n, num_train, steps_offset, np_round)
    }

    /// `n` descending timesteps over `[0, num_train)`; the linspace values go through
    /// `linspace_cast`.
    fn timesteps(
        self,
        n: usize,
        num_train: usize,
        steps_offset: i64,
        linspace_cast: fn(f64) -> f64,
    ) -> Vec<f64> {
        match self {
            Spacing::Linspace => linspace(n, num_train)
                .into_iter()
                .map(linspace_cast)
                .collect(),
            Spacing::Leading => leading(n, num_train, steps_offset),
            Spacing::Trailing => trailing(num_train, num_train as f64 / n as f64),
        }
    }
}

/// `np.linspace(0, num_train - 1, n)[::-1]` (float64, not rounded).
fn linspace(n: usize, num_train: usize) -> Vec<f64> {
    np_linspace(0.0, num_train as f64 - 1.0, n, true)
        .into_iter()
        .rev()
        .collect()
}

/// `(np.arange(n) * (num_train // n))[::-1] + steps_offset`.
fn leading(n: usize, num_train: usize, steps_offset: i64) -> Vec<f64> {
    let ratio = (num_train / n) as i64;
    (0..n as i64)
        .rev()
        .map(|i| (i * ratio + steps_offset) as f64)
        .collect()
}

/// `np.round(np.arange(start, 0, -ratio)) - 1`: counts down from `start`, ending at or above 0.
pub(crate) fn trailing(start: usize, ratio: f64) -> Vec<f64> {
    np_arange(start as f64, 0.0, -ratio)
        .into_iter()
        .map(|t| np_round(t) - 1.0)
        .collect()
}

/// Integer timestep as DDPM-style schedulers index with it.
pub(crate) fn int_timestep(t: f64) -> Result<i64, String> {
    if t.fract() != 0.0 || !t.is_finite() {
        return Err(format!("timestep {t} is not an integer"));
    }
    Ok(t as i64)
}

pub(crate) fn require_steps(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("num_inference_steps must be at least 1".into());
    }
    if n > MAX_TRAIN_TIMESTEPS {
        return Err(format!(
            "num_inference_steps {n} is larger than supported ({MAX_TRAIN_TIMESTEPS})"
        ));
    }
    Ok(())
}

/// Error for step() before set_timesteps (`class` names the scheduler in the message).
pub(crate) fn require_timesteps_set(num_timesteps: usize, class: &str) -> Result<(), String> {
    if num_timesteps == 0 {
        return Err(format!("{class}: call set_timesteps before step"));
    }
    Ok(())
}

pub(crate) fn check_steps(n: usize, num_train: usize) -> Result<(), String> {
    require_steps(n)?;
    if n > num_train {
        return Err(format!(
            "num_inference_steps ({n}) cannot be larger than num_train_timesteps ({num_train})"
        ));
    }
    Ok(())
}
