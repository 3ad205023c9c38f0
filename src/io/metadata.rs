//! What a generated picture records about itself: the Automatic1111-style `parameters`
//! text (inside the PNG) and the JSON sidecar (beside it, with timings).

use crate::pipeline::{GenerateRequest, Generated};

/// The sampler names Automatic1111 writes for our schedulers, so its tools recognise them.
pub fn a1111_sampler_name(scheduler: &str) -> &'static str {
    match scheduler {
        "pndm" => "PLMS",
        "ddim" => "DDIM",
        "euler" => "Euler",
        "euler-a" => "Euler a",
        "dpm++2m" => "DPM++ 2M",
        "dpm++2m-karras" => "DPM++ 2M Karras",
        "lms" => "LMS",
        "lcm" => "LCM",
        _ => "unknown",
    }
}

/// Automatic1111's format: prompt line(s), "Negative prompt: …", then "Key: value, …".
/// Holds nothing that varies between runs (no timings), so PNG bytes are reproducible.
pub fn parameters_text(req: &GenerateRequest, out: &Generated) -> String {
    let mut text = req.prompt.clone();
    if let Some(neg) = req.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
        text.push_str("\nNegative prompt: ");
        text.push_str(neg);
    }
    let mut fields = vec![
        ("Steps", out.steps.to_string()),
        ("Sampler", a1111_sampler_name(out.scheduler).to_string()),
        ("CFG scale", fmt_float(req.guidance_scale)),
        ("Seed", req.seed.to_string()),
        ("Size", format!("{}x{}", out.image.width, out.image.height)),
        ("Model hash", out.model_identity.clone()),
        ("Model", out.model_name.clone()),
    ];
    if out.scheduler == "ddim" && req.eta != 0.0 {
        fields.push(("Eta", fmt_float(req.eta)));
    }
    if req.latents.is_some() {
        fields.push(("Latents", "given".to_string()));
    }
    if req.vae != crate::pipeline::VaeChoice::Full {
        fields.push(("VAE", req.vae.name().to_string()));
    }
    fields.push(("Scheduler", out.scheduler.to_string()));
    fields.push(("RNG", "torch".to_string()));
    fields.push(("Version", format!("sd.wasm {}", crate::VERSION)));
    text.push('\n');
    text.push_str(&fields.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "));
    text
}

/// `sd-<seed>-<FNV-1a of the parameters text>.png`: the name depends only on the parameters,
/// so a rerun (or the browser page's Download) names the same bytes the same way.
pub fn image_file_name(seed: u64, parameters: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in parameters.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    format!("sd-{seed}-{h:08x}.png")
}

/// A finished picture as the library front ends (browser, component) hand it out: the PNG
/// with its `parameters` chunk, that text, the command line's file name, and its sidecar.
pub struct Finished {
    pub png: Vec<u8>,
    pub parameters: String,
    pub file_name: String,
    pub sidecar: serde_json::Value,
}

pub fn finish(req: &GenerateRequest, out: &Generated) -> crate::Result<Finished> {
    let parameters = parameters_text(req, out);
    let png = crate::io::png::encode_png(&out.image, &parameters)?;
    let file_name = image_file_name(req.seed, &parameters);
    let sidecar = sidecar_json(req, out, &file_name);
    Ok(Finished { png, parameters, file_name, sidecar })
}

/// The JSON sidecar: every parameter, the seed, the model's identity, and timings.
pub fn sidecar_json(req: &GenerateRequest, out: &Generated, image_file: &str) -> serde_json::Value {
    let t = &out.timings;
    serde_json::json!({
        "image": image_file,
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "width": out.image.width,
        "height": out.image.height,
        "steps": out.steps,
        "guidance_scale": req.guidance_scale,
        "seed": req.seed,
        "rng": "torch",
        "scheduler": out.scheduler,
        "eta": req.eta,
        "latents_given": req.latents.is_some(),
        "vae": req.vae.name(),
        "model": { "name": out.model_name, "identity": out.model_identity },
        "parameters": parameters_text(req, out),
        "warnings": out.warnings,
        "timings_seconds": {
            "load_text_encoder": t.load_text_encoder,
            "load_unet": t.load_unet,
            "load_vae_decoder": t.load_vae,
            "text_encoding": t.text_encoding,
            "denoising": t.denoising,
            "seconds_per_step": if out.steps > 0 { t.denoising / out.steps as f64 } else { 0.0 },
            "unet_evaluations": t.unet_evaluations,
            "decoding": t.decoding,
            "total": t.total,
        },
        "peak_memory_bytes": crate::models::memory::peak_bytes(),
        "version": format!("sd.wasm {}", crate::VERSION),
    })
}

/// Shortest form that reads back to the same f32 ("7.5", "7", "0.3").
fn fmt_float(v: f32) -> String {
    format!("{v}")
}
