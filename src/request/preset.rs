//! `--preset turbo|lcm|quality`: the steps, guidance, scheduler and decoder a kind of model is
//! meant to run with, filled in from what the model dir declares, for every field the user did
//! not give. A preset the model was not made for is refused: a one-step model run for 25 steps,
//! or an ordinary model run for one, gives a ruined picture, not a fast one.

use super::{param, GenerateRequest, NoInputs, Raw, VaeChoice};
use crate::error::{Result, SdError};
use crate::model_dir::ModelDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Adversarially distilled one-step models (SD-Turbo, SDXS): 1 step, no guidance, TAESD.
    Turbo,
    /// Latent-consistency models (an LCM UNet, or a model with an LCM-LoRA fused in): 4 steps.
    Lcm,
    /// An ordinary model at its best: 25 steps of DPM++ 2M Karras, guidance 7.5, the full VAE.
    Quality,
}

/// What a model dir declares that a preset depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelKind {
    /// The scheduler config's `_class_name`.
    pub scheduler_class: String,
    /// The scheduler config's `timestep_spacing` ("trailing" for SD-Turbo-style models).
    pub timestep_spacing: Option<String>,
    /// The UNet takes a guidance embedding (LCM-distilled UNet).
    pub lcm_unet: bool,
    /// The dir has TAESD (`vae_decoder_taesd/`).
    pub taesd: bool,
}

impl ModelKind {
    pub fn of(dir: &ModelDir) -> Self {
        let text = |key: &str| dir.scheduler_config.get(key).and_then(|v| v.as_str()).map(String::from);
        ModelKind {
            scheduler_class: text("_class_name").unwrap_or_default(),
            timestep_spacing: text("timestep_spacing"),
            lcm_unet: dir.unet_guidance_embedding_dim().is_some(),
            taesd: dir.files.exists(&format!("{}/model.onnx", VaeChoice::Taesd.dir())),
        }
    }
}

impl Preset {
    pub const NAMES: &'static str = "turbo, lcm, quality";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "turbo" => Some(Preset::Turbo),
            "lcm" => Some(Preset::Lcm),
            "quality" => Some(Preset::Quality),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Turbo => "turbo",
            Preset::Lcm => "lcm",
            Preset::Quality => "quality",
        }
    }

    /// The fields this preset sets for such a model, as (request key, value) text; or why the
    /// model is not one this preset is for.
    pub fn values(self, model: &ModelKind) -> std::result::Result<Vec<(&'static str, String)>, String> {
        let fast_decoder = if model.taesd { "taesd" } else { "full" };
        let lcm = model.lcm_unet || model.scheduler_class == "LCMScheduler";
        match self {
            Preset::Turbo if model.timestep_spacing.as_deref() == Some("trailing") && !lcm => Ok(vec![
                ("steps", "1".into()),
                ("guidance_scale", "0".into()),
                ("vae", fast_decoder.into()),
            ]),
            Preset::Turbo => Err(format!(
                "is for one-step models (SD-Turbo, SDXS: a scheduler config with timestep_spacing \"trailing\"); \
                 this model's scheduler is {} with {} spacing{}",
                model.scheduler_class,
                model.timestep_spacing.as_deref().unwrap_or("the default"),
                if lcm { ": use the lcm preset" } else { ": use the quality preset" }
            )),
            // diffusers' LatentConsistencyModelPipeline defaults to guidance 8.5 (embedded, no
            // extra pass); an LCM-LoRA runs without classifier-free guidance (1).
            Preset::Lcm if lcm => Ok(vec![
                ("steps", "4".into()),
                ("guidance_scale", if model.lcm_unet { "8.5" } else { "1" }.into()),
                ("scheduler", "lcm".into()),
                ("vae", fast_decoder.into()),
            ]),
            Preset::Lcm => Err(format!(
                "is for latent-consistency models (an LCM UNet, or an LCM-LoRA fused by scripts/convert.py --lora, \
                 which writes an LCMScheduler config); this model's scheduler is {}",
                model.scheduler_class
            )),
            Preset::Quality => Ok(vec![
                ("steps", "25".into()),
                ("guidance_scale", "7.5".into()),
                ("scheduler", if lcm { "lcm" } else { "dpm++2m-karras" }.into()),
                ("vae", "full".into()),
            ]),
        }
    }
}

/// Fills in the request's preset (if any) for this model: every field it sets that `given`
/// does not name (the user's own flags, JSON keys or recorded parameters win).
pub fn apply_preset(request: &mut GenerateRequest, dir: &ModelDir, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let Some(preset) = request.preset else { return Ok(()) };
    let values = preset
        .values(&ModelKind::of(dir))
        .map_err(|why| SdError::usage(format!("«preset» {} {why}", preset.name())))?;
    for (key, value) in values.iter().filter(|(key, _)| !given(key)) {
        let row = param(key).expect("a preset sets table fields");
        row.set(request, Raw::Text(value), &NoInputs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(class: &str, spacing: Option<&str>, lcm_unet: bool, taesd: bool) -> ModelKind {
        ModelKind { scheduler_class: class.into(), timestep_spacing: spacing.map(String::from), lcm_unet, taesd }
    }

    fn value(values: &[(&'static str, String)], key: &str) -> Option<String> {
        values.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn each_preset_follows_the_model() {
        let turbo = Preset::Turbo.values(&kind("EulerAncestralDiscreteScheduler", Some("trailing"), false, true)).unwrap();
        assert_eq!((value(&turbo, "steps"), value(&turbo, "guidance_scale")), (Some("1".into()), Some("0".into())));
        assert_eq!(value(&turbo, "vae").as_deref(), Some("taesd"));
        let no_taesd = Preset::Turbo.values(&kind("EulerDiscreteScheduler", Some("trailing"), false, false)).unwrap();
        assert_eq!(value(&no_taesd, "vae").as_deref(), Some("full"));
        let lcm_unet = Preset::Lcm.values(&kind("LCMScheduler", Some("leading"), true, false)).unwrap();
        assert_eq!(value(&lcm_unet, "guidance_scale").as_deref(), Some("8.5"));
        let lcm_lora = Preset::Lcm.values(&kind("LCMScheduler", None, false, false)).unwrap();
        assert_eq!((value(&lcm_lora, "guidance_scale").as_deref(), value(&lcm_lora, "steps").as_deref()), (Some("1"), Some("4")));
        let quality = Preset::Quality.values(&kind("PNDMScheduler", None, false, true)).unwrap();
        assert_eq!(value(&quality, "scheduler").as_deref(), Some("dpm++2m-karras"));
        assert_eq!(value(&quality, "vae").as_deref(), Some("full"));
    }

    #[test]
    fn a_preset_for_another_kind_of_model_is_refused() {
        assert!(Preset::Turbo.values(&kind("PNDMScheduler", Some("leading"), false, true)).is_err());
        assert!(Preset::Turbo.values(&kind("LCMScheduler", Some("trailing"), true, false)).is_err());
        assert!(Preset::Lcm.values(&kind("EulerAncestralDiscreteScheduler", Some("trailing"), false, true)).is_err());
    }
}
