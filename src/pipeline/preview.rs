//! A look at the latents while denoising runs: through TAESD when the model dir has it (a
//! real picture at the output size, for ~1/16 of the full VAE's work), else the linear
//! latent → RGB map that SD front ends use for SD 1.x/2.x's 4-channel latent space (one pixel
//! per latent).

use super::decode::{to_rgb8, DecoderSlot};
use super::events::Run;
use super::plan::Plan;
use super::slot::Slot;
use crate::codecs::png::RgbImage;
use crate::error::Result;
use crate::model_dir::ModelDir;
use crate::models::VaeDecoder;
use crate::request::VaeChoice;
use crate::tensor::Latents;
use ndarray::Axis;

/// Draws the previews of a denoising stage. TAESD (a few MB of weights) stays loaded beside
/// the UNet while it runs; the one-network-at-a-time rule is about the big ones.
pub struct Previews<'d> {
    dir: &'d ModelDir<'d>,
    taesd: Option<DecoderSlot>,
}

impl<'d> Previews<'d> {
    pub fn new(dir: &'d ModelDir<'d>) -> Self {
        let taesd = dir.files.exists(&format!("{}/model.onnx", VaeChoice::Taesd.dir()));
        Previews { dir, taesd: taesd.then(|| Slot::new("TAESD (previews)")) }
    }

    /// The first picture of the batch as it stands. A TAESD that fails to load or decode is
    /// reported once and the linear map used instead: a preview must not end a long run.
    pub fn picture(&mut self, latents: &Latents, plan: &Plan, run: &mut Run) -> Option<RgbImage> {
        let first = latents.index_axis(Axis(0), 0).insert_axis(Axis(0)).to_owned();
        if let Some(slot) = &mut self.taesd {
            match taesd_picture(slot, self.dir, &first, plan, run) {
                Ok(image) => return Some(image),
                Err(e) => {
                    run.warn(format!("previews: TAESD failed ({}); showing latents mapped to RGB instead", e.message));
                    self.taesd = None;
                }
            }
        }
        latent_preview(&first)
    }
}

fn taesd_picture(slot: &mut DecoderSlot, dir: &ModelDir, latents: &Latents, plan: &Plan, run: &mut Run) -> Result<RgbImage> {
    let taesd = VaeChoice::Taesd.dir();
    let key = (taesd, plan.one_latent, plan.scale);
    let (decoder, seconds) = slot.get(key, run, |&(folder, latent, scale)| VaeDecoder::load(dir.files, folder, latent, scale))?;
    run.timings.load_vae += seconds;
    let decoded = decoder.decode(&(latents / dir.decoder_scaling_factor(taesd)?))?;
    to_rgb8(&decoded)
}

/// Rows: latent channel; columns: R, G, B contribution.
const LATENT_RGB: [[f32; 3]; 4] =
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];

/// None when the latent space is not the 4-channel SD one.
pub fn latent_preview(latents: &Latents) -> Option<RgbImage> {
    let shape = latents.shape();
    if shape.len() != 4 || shape[1] != 4 {
        return None;
    }
    let (h, w) = (shape[2], shape[3]);
    let mut pixels = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v: f32 = (0..4).map(|k| LATENT_RGB[k][c] * latents[[0, k, y, x]]).sum();
                pixels.push((((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
    Some(RgbImage { width: w as u32, height: h as u32, pixels })
}
