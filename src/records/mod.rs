//! What a generated picture records about itself: the Automatic1111-style `parameters` text
//! inside the PNG ([`parameters`]), the JSON sidecar beside it ([`sidecar`]), and its file name.
//! Front ends hand these out; the pipeline below knows nothing of them.

pub mod parameters;
pub mod sidecar;

use crate::pipeline::Generated;
use crate::request::GenerateRequest;

/// `sd-<seed>-<FNV-1a>.png`, hashed over the parameters text and then the content of every
/// input picture and latents ([`input_content`]): the text records only "Init image: given",
/// so two runs from different pictures must not share a name (and overwrite each other).
/// A rerun with the same parameters and inputs names the same bytes the same way.
pub fn image_file_name(seed: u64, parameters: &str, req: &GenerateRequest) -> String {
    let mut h = Fnv1a::new();
    h.write(parameters.as_bytes());
    input_content(req, &mut |bytes| h.write(bytes));
    format!("sd-{seed}-{:08x}.png", h.0)
}

/// 32-bit FNV-1a: tiny, stable across platforms and versions (names must not change).
struct Fnv1a(u32);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0x811c9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u32).wrapping_mul(0x01000193);
        }
    }
}

/// The request's inputs as they came, as bytes: each picture's size and pixels, the latents'
/// shape and values. Nothing for a request without inputs, so text-to-image names are what
/// they always were.
pub fn input_content(req: &GenerateRequest, sink: &mut dyn FnMut(&[u8])) {
    for (tag, picture) in [(b"init", &req.init_image), (b"mask", &req.mask)] {
        if let Some(p) = picture {
            sink(tag);
            sink(&p.width.to_le_bytes());
            sink(&p.height.to_le_bytes());
            sink(&p.pixels);
        }
    }
    if let Some(latents) = &req.latents {
        sink(b"latents");
        for &d in latents.shape() {
            sink(&(d as u64).to_le_bytes());
        }
        for v in latents.iter() {
            sink(&v.to_bits().to_le_bytes());
        }
    }
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
    let file_name = file_name.unwrap_or_else(|| image_file_name(out.seed, &parameters, req));
    let sidecar = sidecar::sidecar_json(req, out, &parameters, &file_name);
    Ok(Finished { png, parameters, file_name, sidecar })
}

/// Seconds per denoising step over all batches: the figure the CLI prints and the sidecar keeps.
pub fn seconds_per_step(req: &GenerateRequest, out: &Generated) -> f64 {
    let batches = req.num_images.div_ceil(req.batch_size.max(1));
    out.timings.denoising / (out.denoising_steps * batches).max(1) as f64
}
