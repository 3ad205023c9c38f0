//! A cheap look at the latents while denoising runs: the linear latent → RGB map that SD
//! front ends use for SD 1.x/2.x's 4-channel VAE latent space (one pixel per latent).

use crate::codecs::png::RgbImage;
use crate::tensor::Latents;

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
