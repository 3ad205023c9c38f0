//! Stage 5: latents → pixels through the chosen VAE decoder, one picture at a time.

use super::events::Run;
use super::plan::Plan;
use super::slot::Slot;
use crate::codecs::png::RgbImage;
use crate::error::{Result, SdError};
use crate::model_dir::ModelDir;
use crate::models::VaeDecoder;
use crate::tensor::Latents;

/// The VAE decoder for a folder (full VAE or TAESD), a latent shape and a scale.
pub type DecoderSlot = Slot<(&'static str, [usize; 4], u32), VaeDecoder>;

pub fn decoder_slot() -> DecoderSlot {
    Slot::new("VAE decoder")
}

/// Decodes one request's latents (one per picture) with the slot's decoder.
pub fn decode(slot: &mut DecoderSlot, dir: &ModelDir, plan: &Plan, latents: Vec<Latents>, run: &mut Run) -> Result<Vec<RgbImage>> {
    let key = (plan.decoder, plan.one_latent, plan.scale);
    let (vae, seconds) = slot.get(key, run, |&(decoder, latent, scale)| VaeDecoder::load(dir.files, decoder, latent, scale))?;
    run.timings.load_vae += seconds;
    let start = run.now();
    let scaling = dir.decoder_scaling_factor(plan.decoder)?;
    let mut images = Vec::with_capacity(latents.len());
    for latents in latents {
        let decoded = vae.decode(&(latents / scaling))?;
        run.tensor("decoded image (VAE decoder output)", &decoded)?;
        images.push(to_rgb8(&decoded)?);
    }
    run.timings.decoding += run.now() - start;
    Ok(images)
}

/// [1, 3, H, W] in [-1, 1] → RGB8, exactly as diffusers' postprocess + numpy_to_pil:
/// (x / 2 + 0.5).clamp(0, 1), then (x * 255).round() with ties to even.
pub fn to_rgb8(decoded: &Latents) -> Result<RgbImage> {
    let shape = decoded.shape();
    if shape.len() != 4 || shape[0] != 1 || shape[1] != 3 {
        return Err(SdError::model(format!("the VAE decoder returned shape {shape:?}; expected [1, 3, H, W]")));
    }
    let (h, w) = (shape[2], shape[3]);
    let mut pixels = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = (decoded[[0, c, y, x]] / 2.0 + 0.5).clamp(0.0, 1.0);
                let v = if v.is_nan() { 0.0 } else { v };
                pixels.push((v * 255.0).round_ties_even() as u8);
            }
        }
    }
    Ok(RgbImage { width: w as u32, height: h as u32, pixels })
}
