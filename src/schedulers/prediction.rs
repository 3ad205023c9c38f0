//! What the model predicts (`prediction_type`), and x0 from it for the DDPM-parameterised
//! schedulers (DDIM, LCM), clipped when `clip_sample` says so.

use super::config::Config;
use super::elementwise::map2;
use super::torch::torch_clamp;
use crate::tensor::Latents;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prediction {
    Epsilon,
    Velocity,
    Sample,
}

impl Prediction {
    /// Parses `prediction_type`, accepting only the spellings `allowed` by the class.
    pub(crate) fn parse(cfg: &Config, allowed: &[&str], class: &str) -> Result<Self, String> {
        let s = cfg.string("prediction_type", "epsilon")?;
        if !allowed.contains(&s.as_str()) {
            return Err(format!(
                "scheduler config: prediction_type '{s}' is not supported by {class} (expected one of: {})",
                allowed.join(", ")
            ));
        }
        Ok(match s.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::Velocity,
            // EulerDiscreteScheduler also spells it "original_sample".
            _ => Prediction::Sample,
        })
    }
}

/// `clip_sample` / `clip_sample_range` (DDIM, LCM): the x0 clamp range, if clipping.
pub(crate) fn parse_clip_sample(cfg: &Config, default: bool) -> Result<Option<f32>, String> {
    let range = cfg.f64("clip_sample_range", 1.0)? as f32;
    Ok(cfg.bool("clip_sample", default)?.then_some(range))
}

/// x0 predicted from the model output with alpha_cumprod `a_t` (DDIM, LCM), clipped if configured.
pub(crate) fn alpha_pred_original(
    prediction: Prediction,
    a_t: f32,
    model_output: &Latents,
    sample: &Latents,
    clip: Option<f32>,
) -> Result<Latents, String> {
    let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
    let mut x0 = match prediction {
        Prediction::Epsilon => map2(sample, model_output, |s, m| (s - sb * m) / sa)?,
        Prediction::Sample => map2(sample, model_output, |_, m| m)?,
        Prediction::Velocity => map2(sample, model_output, |s, m| sa * s - sb * m)?,
    };
    if let Some(r) = clip {
        x0.mapv_inplace(|v| torch_clamp(v, -r, r));
    }
    Ok(x0)
}
