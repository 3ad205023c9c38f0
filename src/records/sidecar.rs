//! The JSON sidecar: every request field (from the parameter table), the picture as made,
//! the model's identity, timings and peak memory.

use crate::pipeline::Generated;
use crate::request::{GenerateRequest, PARAMS};
use serde_json::{json, Value};

pub fn sidecar_json(req: &GenerateRequest, out: &Generated, parameters: &str, image_file: &str) -> Value {
    let mut sidecar = serde_json::Map::new();
    for param in PARAMS {
        sidecar.insert(param.key.to_string(), param.json(req));
    }
    let t = &out.timings;
    let made = json!({
        "image": image_file,
        // The picture as made: its own seed, the resolved size and scheduler.
        "width": out.image.width,
        "height": out.image.height,
        "seed": out.seed,
        "first_seed": req.seed,
        "scheduler": out.scheduler,
        "strength": req.init_image.as_ref().map(|_| req.strength_or_default()),
        "denoising_steps": out.denoising_steps,
        "model": { "name": out.model_name, "identity": out.model_identity },
        "parameters": parameters,
        "warnings": out.warnings.iter().map(|w| crate::error::word(w, |key| key.to_string())).collect::<Vec<_>>(),
        "timings_seconds": {
            "load_text_encoder": t.load_text_encoder,
            "load_unet": t.load_unet,
            "load_vae_decoder": t.load_vae,
            "load_vae_encoder": t.load_vae_encoder,
            "image_encoding": t.image_encoding,
            "text_encoding": t.text_encoding,
            "denoising": t.denoising,
            "seconds_per_step": super::seconds_per_step(req, out),
            "unet_evaluations": t.unet_evaluations,
            "decoding": t.decoding,
            "total": t.total,
        },
        "peak_memory_bytes": crate::models::memory::peak_bytes(),
        "version": format!("sd.wasm {}", crate::VERSION),
    });
    if let Value::Object(made) = made {
        sidecar.extend(made);
    }
    Value::Object(sidecar)
}
