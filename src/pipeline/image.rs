//! Stage 3 (image-to-image and inpainting): the init picture and mask at the output size, as
//! diffusers' VaeImageProcessor makes them, then the VAE encoder's view of them.

use super::events::Run;
use super::plan::Plan;
use super::slot::Slot;
use crate::codecs::image::{resize_lanczos, to_gray};
use crate::codecs::png::RgbImage;
use crate::error::Result;
use crate::model_dir::ModelFiles;
use crate::models::vae::Encoded;
use crate::models::VaeEncoder;
use crate::request::GenerateRequest;
use crate::tensor::Latents;

/// The init picture and mask as tensors.
pub struct Pixels {
    /// [1, 3, H, W] in [-1, 1].
    pub image: Latents,
    /// The image with the repainted area set to 0 (mid-gray), for the inpainting UNet.
    pub masked_image: Option<Latents>,
    /// [1, 1, h, w] at the latent size: 1 = repaint, 0 = keep.
    pub latent_mask: Option<Latents>,
}

/// What the denoising stage starts from: the pixels and their encoder outputs.
pub struct ImageConditioning {
    pub pixels: Pixels,
    pub image: Encoded,
    pub masked_image: Option<Encoded>,
}

/// The init picture (and mask) at the output size; None for text-to-image.
pub fn prepare(req: &GenerateRequest, plan: &Plan, run: &mut Run) -> Option<Pixels> {
    let init = req.init_image.as_ref()?;
    let (width, height) = (plan.width, plan.height);
    let image = if (init.width, init.height) != (width, height) {
        run.warn(format!(
            "«init_image» is {}x{}; resized to {width}x{height} (Lanczos, as diffusers/PIL)",
            init.width, init.height
        ));
        resize_lanczos(init, width, height)
    } else {
        init.clone()
    };
    let (wu, hu) = (width as usize, height as usize);
    let image = Latents::from_shape_fn(vec![1, 3, hu, wu], |ix| {
        let v = image.pixels[(ix[2] * wu + ix[3]) * 3 + ix[1]] as f32 / 255.0;
        2.0 * v - 1.0
    });
    let Some(mask) = &req.mask else {
        return Some(Pixels { image, masked_image: None, latent_mask: None });
    };
    let repaint = repaint_pixels(mask, width, height, run);
    let masked = Latents::from_shape_fn(vec![1, 3, hu, wu], |ix| {
        let keep = !repaint[ix[2] * wu + ix[3]];
        image[[0, ix[1], ix[2], ix[3]]] * if keep { 1.0 } else { 0.0 }
    });
    let (lh, lw) = plan.latent_size();
    // torch's nearest interpolation to the latent size: source pixel floor(i × in / out).
    let latent_mask = Latents::from_shape_fn(vec![1, 1, lh, lw], |ix| {
        let y = ((ix[2] as f64 * (hu as f64 / lh as f64)) as usize).min(hu - 1);
        let x = ((ix[3] as f64 * (wu as f64 / lw as f64)) as usize).min(wu - 1);
        repaint[y * wu + x] as u8 as f32
    });
    Some(Pixels { image, masked_image: Some(masked), latent_mask: Some(latent_mask) })
}

/// diffusers' mask processor at the output size: grayscale, /255, then repaint from 0.5 up.
fn repaint_pixels(mask: &RgbImage, width: u32, height: u32, run: &mut Run) -> Vec<bool> {
    if (mask.width, mask.height) != (width, height) {
        run.warn(format!(
            "«mask» is {}x{}, the picture {width}x{height}: the mask was resized to {width}x{height} (Lanczos, then white from 128 up)",
            mask.width, mask.height
        ));
    }
    let mask = resize_lanczos(mask, width, height);
    let repaint: Vec<bool> = to_gray(&mask).iter().map(|&v| v as f32 / 255.0 >= 0.5).collect();
    if !repaint.iter().any(|&r| r) {
        run.warn("«mask» has no white (repaint) pixel: the picture is kept as it is, up to the VAE's round trip".to_string());
    }
    repaint
}

/// The VAE encoder for a picture shape, latent shape and scale.
pub type EncoderSlot = Slot<([usize; 4], [usize; 4], u32), VaeEncoder>;

pub fn encoder_slot() -> EncoderSlot {
    Slot::new("VAE encoder")
}

/// Encodes the picture (and the masked picture) with the slot's VAE encoder.
pub fn encode(slot: &mut EncoderSlot, files: &dyn ModelFiles, pixels: Pixels, plan: &Plan, run: &mut Run) -> Result<ImageConditioning> {
    let key = ([1, 3, plan.height as usize, plan.width as usize], plan.one_latent, plan.scale);
    let (encoder, seconds) = slot.get(key, run, |&(image, latent, scale)| VaeEncoder::load(files, image, latent, scale))?;
    run.timings.load_vae_encoder += seconds;
    let start = run.now();
    let image = encoder.encode(&pixels.image)?;
    let masked_image = pixels.masked_image.as_ref().map(|m| encoder.encode(m)).transpose()?;
    for encoded in std::iter::once(&image).chain(masked_image.as_ref()) {
        run.tensor("VAE encoder output", encoded.tensor())?;
    }
    run.timings.image_encoding += run.now() - start;
    Ok(ImageConditioning { pixels, image, masked_image })
}
