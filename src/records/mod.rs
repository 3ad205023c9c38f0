//! What a generated picture records about itself: the Automatic1111-style `parameters` text
//! inside the PNG ([`parameters`]), the JSON sidecar beside it ([`sidecar`]), and its file name.
//! Front ends hand these out; the pipeline below knows nothing of them.

pub mod parameters;
pub mod sidecar;

use crate::pipeline::Generated;
use crate::request::GenerateRequest;

/// `sd-<seed>-<FNV-1a of the parameters text>.png`: the name depends only on the parameters,
/// so a rerun (or the browser page's Download) names the same bytes the same way.
pub fn image_file_name(seed: u64, parameters: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in parameters.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    format!("sd-{seed}-{h:08x}.png")
}

/// A finished picture as the front ends hand it out: the PNG with its `parameters` chunk,
/// that text, the file name, and its sidecar.
pub struct Finished {
    pub png: Vec<u8>,
    pub parameters: String,
    pub file_name: String,
    pub sidecar: serde_json::Value,
}

/// The records of one picture; `file_name` overrides the default `sd-<seed>-<hash>.png`.
pub fn finish(req: &GenerateRequest, out: &Generated, file_name: Option<String>) -> crate::Result<Finished> {
    let parameters = parameters::parameters_text(req, out);
    let png = crate::codecs::png::encode_png(&out.image, &parameters)?;
    let file_name = file_name.unwrap_or_else(|| image_file_name(out.seed, &parameters));
    let sidecar = sidecar::sidecar_json(req, out, &parameters, &file_name);
    Ok(Finished { png, parameters, file_name, sidecar })
}

/// Seconds per denoising step over all batches: the figure the CLI prints and the sidecar keeps.
pub fn seconds_per_step(req: &GenerateRequest, out: &Generated) -> f64 {
    let batches = req.num_images.div_ceil(req.batch_size.max(1));
    out.timings.denoising / (out.denoising_steps * batches).max(1) as f64
}
