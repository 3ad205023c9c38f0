//! What a generated picture records about itself: the Automatic1111-style `parameters`
//! text (inside the PNG) and the JSON sidecar (beside it, with timings).

use crate::pipeline::{GenerateRequest, Generated};
use crate::schedulers::SchedulerKind;

/// The sampler name Automatic1111 writes for one of our schedulers, so its tools recognise it.
fn a1111_sampler_name(scheduler: &str) -> String {
    SchedulerKind::parse(scheduler).map_or_else(|| "unknown".to_string(), SchedulerKind::a1111_name)
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
        ("Sampler", a1111_sampler_name(out.scheduler)),
        ("CFG scale", fmt_float(req.guidance_scale)),
        ("Seed", out.seed.to_string()),
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
    if let Some(init) = &req.init {
        fields.push(("Denoising strength", fmt_float(init.strength)));
        fields.push(("Init image", "given".to_string()));
        if init.mask.is_some() {
            fields.push(("Mask", "given".to_string()));
        }
    }
    let o = &req.scheduler_overrides;
    if let Some(v) = o.beta_start {
        fields.push(("Beta start", v.to_string()));
    }
    if let Some(v) = o.beta_end {
        fields.push(("Beta end", v.to_string()));
    }
    if let Some(v) = &o.beta_schedule {
        fields.push(("Beta schedule", v.clone()));
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
        "seed": out.seed,
        "first_seed": req.seed,
        "num_images": req.num_images,
        "batch_size": req.batch_size,
        "strength": req.init.as_ref().map(|i| i.strength),
        "init_image": req.init.is_some(),
        "mask": req.init.as_ref().is_some_and(|i| i.mask.is_some()),
        "denoising_steps": out.denoising_steps,
        "beta_start": req.scheduler_overrides.beta_start,
        "beta_end": req.scheduler_overrides.beta_end,
        "beta_schedule": req.scheduler_overrides.beta_schedule,
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
            "load_vae_encoder": t.load_vae_encoder,
            "image_encoding": t.image_encoding,
            "text_encoding": t.text_encoding,
            "denoising": t.denoising,
            "seconds_per_step": t.denoising / (out.denoising_steps * req.num_images.div_ceil(req.batch_size.max(1))).max(1) as f64,
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

/// A `parameters` text read back as command-line flags (`--params-from`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedParameters {
    pub flags: Vec<(&'static str, String)>,
    /// Keys not used, sampler names we have no scheduler for.
    pub notes: Vec<String>,
}

/// Reads Automatic1111's format (which we also write): the prompt, an optional
/// "Negative prompt: …" (both may span lines), then one line of `Key: value` pairs separated by
/// commas (values with commas are double-quoted, as recent Automatic1111 versions write them).
pub fn parse_parameters(text: &str) -> Result<ParsedParameters, String> {
    let text = text.trim_end();
    let (head, last) = match text.rsplit_once('\n') {
        Some((head, last)) if last.contains("Steps: ") => (head, last),
        _ if text.starts_with("Steps: ") => ("", text),
        _ => return Err("the `parameters` text has no `Steps: …` line (not sd.wasm's or Automatic1111's format)".into()),
    };
    let (prompt, negative) = match head.split_once("\nNegative prompt: ") {
        Some((p, n)) => (p, Some(n)),
        None => match head.strip_prefix("Negative prompt: ") {
            Some(n) => ("", Some(n)),
            None => (head, None),
        },
    };
    let mut out = ParsedParameters::default();
    out.flags.push(("--prompt", prompt.to_string()));
    if let Some(n) = negative {
        out.flags.push(("--negative-prompt", n.to_string()));
    }
    let fields = key_values(last)?;
    let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    // Our own "Scheduler" names it exactly; else the sampler (plus A1111's schedule type).
    let scheduler = get("Scheduler")
        .and_then(SchedulerKind::parse)
        .or_else(|| SchedulerKind::from_a1111(get("Sampler")?, get("Schedule type")))
        .map(|kind| kind.cli_name().to_string());
    let mut used = vec!["Scheduler", "Sampler", "Schedule type"];
    match (scheduler, get("Sampler")) {
        (Some(s), _) => out.flags.push(("--scheduler", s)),
        (None, Some(sampler)) => out.notes.push(format!("sampler {sampler:?} has no scheduler here; the model's own is used")),
        (None, None) => {}
    }
    for (key, flag) in [
        ("Steps", "--steps"),
        ("CFG scale", "--guidance-scale"),
        ("Seed", "--seed"),
        ("Eta", "--eta"),
        ("Eta DDIM", "--eta"),
        ("Denoising strength", "--strength"),
        ("Beta start", "--beta-start"),
        ("Beta end", "--beta-end"),
        ("Beta schedule", "--beta-schedule"),
    ] {
        used.push(key);
        if let Some(v) = get(key) {
            out.flags.push((flag, v.to_string()));
        }
    }
    used.push("Size");
    if let Some(size) = get("Size") {
        let (w, h) = size.split_once('x').ok_or_else(|| format!("Size {size:?} is not WxH"))?;
        out.flags.push(("--width", w.trim().to_string()));
        out.flags.push(("--height", h.trim().to_string()));
    }
    used.push("VAE");
    if let Some(vae) = get("VAE") {
        match crate::pipeline::VaeChoice::parse(vae) {
            Some(_) => out.flags.push(("--vae", vae.to_string())),
            None => out.notes.push(format!("VAE {vae:?} is not one of ours; the model's own VAE is used")),
        }
    }
    // Recorded, but not settings to repeat: the model, our version, the generator.
    used.extend(["Model hash", "Model", "Version", "RNG", "Init image", "Mask", "Latents"]);
    let unused: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).filter(|k| !used.contains(k)).collect();
    if !unused.is_empty() {
        out.notes.push(format!("not used: {}", unused.join(", ")));
    }
    Ok(out)
}

/// `Key: value, Key: "quoted, value", …`.
fn key_values(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(": ").ok_or_else(|| format!("cannot read {rest:?} as `Key: value`"))?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.ok_or_else(|| format!("unterminated quote after {key}"))?;
            (quoted[..end].replace("\\\"", "\"").replace("\\\\", "\\"), &quoted[end + 1..])
        } else {
            match after.split_once(", ") {
                Some((v, a)) => (v.to_string(), a),
                None => (after.to_string(), ""),
            }
        };
        out.push((key.trim().to_string(), value.trim().to_string()));
        rest = after.trim_start_matches(',').trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_automatic1111_parameters() {
        let text = "a castle, at night\nwith stars\nNegative prompt: blurry, low quality\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: abc, Model: sd15, Denoising strength: 0.6, Lora hashes: \"a: 1, b: 2\", Version: v1.9.4";
        let p = parse_parameters(text).unwrap();
        let flag = |f: &str| p.flags.iter().find(|(k, _)| *k == f).map(|(_, v)| v.as_str());
        assert_eq!(flag("--prompt"), Some("a castle, at night\nwith stars"));
        assert_eq!(flag("--negative-prompt"), Some("blurry, low quality"));
        assert_eq!(flag("--scheduler"), Some("dpm++2m-karras"));
        assert_eq!(flag("--steps"), Some("30"));
        assert_eq!(flag("--guidance-scale"), Some("6.5"));
        assert_eq!(flag("--seed"), Some("1234"));
        assert_eq!((flag("--width"), flag("--height")), (Some("512"), Some("768")));
        assert_eq!(flag("--strength"), Some("0.6"));
        assert_eq!(p.notes, vec!["not used: Lora hashes".to_string()]);
    }

    #[test]
    fn text_without_a_steps_line_is_refused() {
        assert!(parse_parameters("just a prompt").is_err());
    }
}
